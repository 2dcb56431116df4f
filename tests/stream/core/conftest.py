"""A small fraud model shared by the core's test modules."""

from __future__ import annotations

import pytest

from tests.stream.core.test_pipeline import train_fraud_booster


@pytest.fixture(scope="session")
def booster():
    return train_fraud_booster()
