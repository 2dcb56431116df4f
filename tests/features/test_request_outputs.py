"""Request features never hand back (a view of) a caller's input buffer."""

from __future__ import annotations

import numpy as np
import pytest

from features.repo import load_vocab, repo_path
from features.request import RequestFeatures


@pytest.mark.parametrize("pipeline", ["fraud", "pricing"])
def test_no_output_shares_memory_with_an_input(pipeline: str) -> None:
    rf = RequestFeatures(pipeline, load_vocab(repo_path(pipeline)))
    n = 8
    cols = {name: np.linspace(1.0, 2.0, n) for name in rf.inputs}
    cols["event_time"] = np.full(n, 1.8e9)
    if pipeline == "fraud":
        for name in ("currency", "country", "channel"):
            cols[name] = np.array(["USD"] * n, dtype=object)
    before = {k: v.copy() for k, v in cols.items()}
    out = rf.compute(cols)
    for name, value in out.items():
        for k, arr in cols.items():
            assert not np.shares_memory(value, arr), (name, k)
        value[:] = -1.0  # writing an output leaves every input as it was
    for k, arr in cols.items():
        np.testing.assert_array_equal(arr, before[k])
