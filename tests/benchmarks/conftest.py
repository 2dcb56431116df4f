"""Fixtures shared by the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Any]:
    """A tiny benchmark workspace (data, online rows, a 20-tree model), keys removed after."""
    from benchmarks.workspace import cleanup_online, prepare_workspace

    root = tmp_path_factory.mktemp("bench-ws")
    ws = prepare_workspace("fraud", root, redis_url, size="tiny", progress=False, num_trees=20)
    yield ws
    cleanup_online(ws)
