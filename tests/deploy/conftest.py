"""Fixtures of the deploy checks: the Prometheus binaries (Debian package 'prometheus')."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/run installs it "
                    "when running as root)")
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus server not installed (Debian package 'prometheus'; .ci/run "
                    "installs it when running as root)")
    return path
