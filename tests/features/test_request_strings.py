"""``encode_strings``: the C-level lookup gives what the per-value Python check gave."""

from __future__ import annotations

import math

import numpy as np

from features.request import encode_strings

NAN = float("nan")


def _reference(values, lookup):
    """The former per-value definition: a str's code, else NaN."""
    return [lookup.get(v, NAN) if isinstance(v, str) else NAN
            for v in np.asarray(values, dtype=object).ravel()]


def _same(got, want) -> bool:
    return len(got) == len(want) and all(
        (math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want, strict=True))


def test_codes_and_nan_for_everything_that_is_not_a_known_str() -> None:
    lookup = {"US": 0, "DE": 1, "": 2, "1": 3}
    values = np.array(["DE", "US", "XX", "", None, NAN, 1, 1.0, b"US", np.str_("DE"), "1",
                       True], dtype=object)
    got = encode_strings(values, lookup)
    assert got.dtype == np.float64
    assert _same(got.tolist(), _reference(values, lookup))
    assert got[:4].tolist()[:2] == [1.0, 0.0] and got[3] == 2.0 and got[10] == 3.0


def test_unhashable_values_take_the_careful_path() -> None:
    lookup = {"a": 0}
    values = np.empty(3, dtype=object)
    values[:] = ["a", ["a"], {"a": 1}]
    assert _same(encode_strings(values, lookup).tolist(), [0.0, NAN, NAN])


def test_any_shape_is_flattened() -> None:
    lookup = {"a": 0, "b": 1}
    values = np.array([["a", "b"], ["c", "a"]], dtype=object)
    assert _same(encode_strings(values, lookup).tolist(), [0.0, 1.0, NAN, 0.0])
    assert encode_strings([], lookup).shape == (0,)
