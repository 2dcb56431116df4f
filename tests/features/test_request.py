"""Request-time features: hand-computed values, NaN rules, and time oracles."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.exceptions import FeatureRepoError, FeaturesError
from features.repo import feature_refs, load_vocab, repo_path
from features.request import (
    FX_TO_USD,
    RequestFeatures,
    compute_request_features,
    encode_strings,
    request_spec,
)

FRAUD_VOCAB = load_vocab(repo_path("fraud"))
PRICING_VOCAB = load_vocab(repo_path("pricing"))
# Saturday 2026-11-28 13:30:00 UTC
SAT_1330 = datetime(2026, 11, 28, 13, 30, tzinfo=UTC).timestamp()


def _code(name: str, value: str) -> float:
    return float(FRAUD_VOCAB[name].index(value))


def _fraud_columns() -> dict[str, np.ndarray]:
    return {
        "amount": np.array([100.0, 50.0, 10.0, 20.0]),
        "currency": np.array(["EUR", "USD", "XXX", None], dtype=object),
        "country": np.array(["FR", "US", "US", "ZZ"], dtype=object),
        "channel": np.array(["ecom", "pos", "moto", "bogus"], dtype=object),
        "mcc": np.array([5411, 5812, 4829, 7995]),
        "event_time": np.array([SAT_1330, SAT_1330 + 86400 * 2 + 61, 0.0, 3600.0 * 23.5]),
        "avg_amount_30d": np.array([54.0, np.nan, 0.0, 10.0]),
        "std_amount_30d": np.array([10.0, 5.0, 0.0, np.nan]),
        "home_country": np.array([_code("home_country", "US"), _code("home_country", "US"),
                                  np.nan, _code("home_country", "DE")]),
        "merchant_country": np.array([_code("merchant_country", "FR"), np.nan,
                                      _code("merchant_country", "GB"), np.nan]),
    }  # fmt: skip


def test_fraud_values_by_hand() -> None:
    out = RequestFeatures("fraud", FRAUD_VOCAB).compute(_fraud_columns())
    assert tuple(out) == request_spec("fraud").outputs
    assert all(v.dtype == np.float64 and v.shape == (4,) for v in out.values())
    usd0 = 100.0 * FX_TO_USD["EUR"]
    np.testing.assert_allclose(out["amount_usd"][:2], [usd0, 50.0])
    assert np.isnan(out["amount_usd"][2:]).all()  # unknown / missing currency
    np.testing.assert_allclose(out["log_amount_usd"][0], np.log1p(usd0))
    np.testing.assert_allclose(out["hour_of_day"], [13.5, 13.5 + 1 / 60, 0.0, 23.5])
    np.testing.assert_allclose(out["day_of_week"], [5.0, 0.0, 3.0, 3.0])  # Sat, Mon, Thu, Thu
    np.testing.assert_array_equal(
        out["channel"], [_code("channel", "ecom"), _code("channel", "pos"),
                         _code("channel", "moto"), np.nan],
    )  # fmt: skip
    assert out["currency"][0] == _code("currency", "EUR") and np.isnan(out["currency"][3])
    assert np.isnan(out["country"][3])
    np.testing.assert_array_equal(out["mcc"], [5411, 5812, 4829, 7995])
    # FR vs home US -> foreign; US vs US -> domestic; missing home / unknown country -> NaN
    np.testing.assert_array_equal(out["is_foreign"][:2], [1.0, 0.0])
    assert np.isnan(out["is_foreign"][2:]).all()
    assert out["is_cross_border"][0] == 0.0 and out["is_cross_border"][2] == 1.0
    assert np.isnan(out["is_cross_border"][1])
    np.testing.assert_allclose(out["amount_to_avg"][0], usd0 / 54.0)
    assert np.isnan(out["amount_to_avg"][1:3]).all()  # avg missing, avg zero
    np.testing.assert_allclose(out["amount_zscore"][0], (usd0 - 54.0) / 10.0)
    assert np.isnan(out["amount_zscore"][2:]).all()


def test_pricing_values_by_hand() -> None:
    cols = {
        "base_price": np.array([10.0, 4.0, 0.0]),
        "candidate_price": np.array([12.0, 3.0, 5.0]),
        "event_time": np.array([SAT_1330, SAT_1330, SAT_1330]),
        "comp_price_min": np.array([11.0, np.nan, 2.5]),
        "comp_price_mean": np.array([12.0, np.nan, 0.0]),
        "list_price": np.array([10.0, 4.0, np.nan]),
    }
    out = compute_request_features("pricing", cols, PRICING_VOCAB)
    assert tuple(out) == request_spec("pricing").outputs
    np.testing.assert_allclose(out["price_ratio"][:2], [1.2, 0.75])
    np.testing.assert_allclose(out["log_price_ratio"][:2], np.log([1.2, 0.75]))
    assert np.isnan(out["price_ratio"][2]) and np.isnan(out["log_price_ratio"][2])
    np.testing.assert_allclose(out["price_vs_comp_min"][[0, 2]], [12 / 11, 2.0])
    assert np.isnan(out["price_vs_comp_min"][1])
    np.testing.assert_allclose(out["price_vs_comp_mean"][0], 1.0)
    assert np.isnan(out["price_vs_comp_mean"][1:]).all()
    np.testing.assert_allclose(out["price_vs_list"][:2], [1.2, 0.75])
    np.testing.assert_array_equal(out["candidate_price"], cols["candidate_price"])
    assert out["candidate_price"] is not cols["candidate_price"]  # never aliases the input


def test_inputs_are_checked() -> None:
    rf = RequestFeatures("fraud", FRAUD_VOCAB)
    cols = _fraud_columns()
    del cols["mcc"]
    with pytest.raises(FeaturesError, match="mcc"):
        rf.compute(cols)
    cols = _fraud_columns()
    cols["amount"] = cols["amount"][:2]
    with pytest.raises(FeaturesError, match="length"):
        rf.compute(cols)
    with pytest.raises(FeatureRepoError):
        RequestFeatures("ads", {})
    with pytest.raises(FeatureRepoError, match="channel"):
        RequestFeatures("fraud", {k: v for k, v in FRAUD_VOCAB.items() if k != "channel"})


@pytest.mark.parametrize("pipeline", ["fraud", "pricing"])
def test_spec_fits_the_repo(pipeline: str) -> None:
    spec = request_spec(pipeline)
    rf = RequestFeatures(pipeline, load_vocab(repo_path(pipeline)))
    online = [ref.split(":", 1)[1] for ref in feature_refs(pipeline)]
    # the worker reads the model's online features; request inputs must be among them
    assert set(spec.online_inputs) <= set(online)
    # model feature names are unique across online and request features
    assert not set(spec.outputs) & set(online)
    assert len(set(spec.outputs)) == len(spec.outputs)
    assert set(spec.categorical) <= set(spec.outputs)
    assert rf.inputs == spec.event_inputs + spec.online_inputs
    assert rf.outputs == spec.outputs


def test_encode_strings() -> None:
    lookup = {"a": 0, "b": 1}
    got = encode_strings(np.array(["b", "a", "c", None, ""], dtype=object), lookup)
    np.testing.assert_array_equal(got, [1.0, 0.0, np.nan, np.nan, np.nan])
    assert encode_strings(np.array([], dtype=object), lookup).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=946_684_800, max_value=4_102_444_800), min_size=1, max_size=20))
def test_time_features_match_datetime(times: list[float]) -> None:
    t = np.array(times)
    n = len(t)
    cols = {
        "base_price": np.ones(n),
        "candidate_price": np.ones(n),
        "event_time": t,
        "comp_price_min": np.ones(n),
        "comp_price_mean": np.ones(n),
        "list_price": np.ones(n),
    }
    out = compute_request_features("pricing", cols, PRICING_VOCAB)
    for i, ts in enumerate(times):
        dt = datetime.fromtimestamp(math.floor(ts), UTC)
        assert out["day_of_week"][i] == dt.weekday()
        assert out["hour_of_day"][i] == pytest.approx(dt.hour + dt.minute / 60, abs=1e-9)
