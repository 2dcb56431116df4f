"""Request-time features: computed from the event itself (plus a few online features).

ONE function per pipeline computes them, columnar and vectorized, and both the training
set generator (``features.synthetic``) and the worker call it, so training and serving
cannot drift apart. The worker plans its feature matrix once at start-up from
:func:`request_spec` (which event columns and online features go in, which names come
out) and then calls :meth:`RequestFeatures.compute` per micro-batch.

Conventions (shared with the online reader and training):

- inputs are ``name -> np.ndarray`` (numeric as numbers; strings as ``str``/object
  arrays); online inputs are float64 columns as the reader decodes them (strings already
  vocabulary codes, bools 0/1, missing NaN);
- outputs are ``name -> float64 array``; strings become vocabulary codes (index in
  ``vocab.json``), unknown or missing -> NaN; any feature whose inputs are missing is NaN;
- times are UTC: ``hour_of_day`` in [0, 24) with minutes as a fraction, ``day_of_week``
  Monday = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from features.exceptions import FeatureRepoError, FeaturesError

__all__ = [
    "FX_TO_USD",
    "RequestFeatureSpec",
    "RequestFeatures",
    "compute_request_features",
    "encode_strings",
    "request_spec",
]

F64 = npt.NDArray[np.float64]

# Fixed reference rates (USD per unit), good enough to put amounts on one scale; the
# model only needs them consistent between training and serving, which this table is.
FX_TO_USD: dict[str, float] = {
    "USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CAD": 0.73, "AUD": 0.66,
    "CHF": 1.13, "SEK": 0.096, "NOK": 0.094, "DKK": 0.145, "PLN": 0.25, "BRL": 0.18,
    "MXN": 0.055, "ARS": 0.0011, "COP": 0.00025, "INR": 0.012, "CNY": 0.138,
    "KRW": 0.00073, "SGD": 0.74, "HKD": 0.128, "NZD": 0.6, "ZAR": 0.054, "NGN": 0.00066,
    "KES": 0.0077, "EGP": 0.02, "AED": 0.272, "SAR": 0.267, "TRY": 0.029, "RUB": 0.011,
    "UAH": 0.024, "RON": 0.217, "CZK": 0.043, "HUF": 0.0027, "ILS": 0.27, "IDR": 0.000063,
    "PHP": 0.0175, "VND": 0.00004, "THB": 0.028, "MYR": 0.21, "PKR": 0.0036,
}  # fmt: skip


@dataclass(frozen=True)
class RequestFeatureSpec:
    """What a pipeline's request-time features need and produce.

    ``online_inputs`` are bare online feature names; they are always among the
    pipeline's default model features (``features.repo.feature_refs``), so reading the
    model's features is enough. ``outputs`` is also the order the model sees them in.
    """

    pipeline: str
    event_inputs: tuple[str, ...]
    online_inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    categorical: tuple[str, ...]


_SPECS = {
    "fraud": RequestFeatureSpec(
        pipeline="fraud",
        event_inputs=("amount", "currency", "country", "channel", "mcc", "event_time"),
        online_inputs=("avg_amount_30d", "std_amount_30d", "home_country", "merchant_country"),
        outputs=(
            "amount_usd", "log_amount_usd", "hour_of_day", "day_of_week", "channel",
            "currency", "country", "mcc", "is_foreign", "is_cross_border",
            "amount_to_avg", "amount_zscore",
        ),
        categorical=("channel", "currency", "country"),
    ),
    "pricing": RequestFeatureSpec(
        pipeline="pricing",
        event_inputs=("base_price", "candidate_price", "event_time"),
        online_inputs=("comp_price_min", "comp_price_mean", "list_price"),
        outputs=(
            "candidate_price", "price_ratio", "log_price_ratio", "price_vs_comp_min",
            "price_vs_comp_mean", "price_vs_list", "hour_of_day", "day_of_week",
        ),
        categorical=(),
    ),
}  # fmt: skip


def request_spec(pipeline: str) -> RequestFeatureSpec:
    """The request-time feature spec of ``pipeline`` (``fraud`` or ``pricing``)."""
    try:
        return _SPECS[pipeline]
    except KeyError:
        raise FeatureRepoError(
            f"unknown pipeline {pipeline!r} (expected one of: {', '.join(_SPECS)})"
        ) from None


def encode_strings(values: Any, lookup: Mapping[str, int]) -> F64:
    """Vocabulary codes of a string column as float64; unknown or missing -> NaN."""
    arr = np.asarray(values, dtype=object).ravel()
    nan = float("nan")
    try:
        # C-level: a dict lookup per value, no Python frame per event (the generator
        # below cost ~0.1 us per value). Vocabulary keys are str, so a non-str value
        # (None, NaN, a number) finds nothing and gets NaN, as below.
        return np.fromiter(map(lookup.get, arr, repeat(nan)), dtype=np.float64,
                           count=arr.size)
    except TypeError:  # an unhashable value: the careful way
        return np.fromiter(
            (lookup.get(v, nan) if isinstance(v, str) else nan for v in arr),
            dtype=np.float64,
            count=arr.size,
        )


class RequestFeatures:
    """The request-time features of one pipeline, with vocabularies prebuilt.

    >>> rf = RequestFeatures("pricing", vocab={})
    >>> out = rf.compute({"base_price": np.array([10.0]), "candidate_price": np.array([12.0]),
    ...                   "event_time": np.array([0.0]), "comp_price_min": np.array([11.0]),
    ...                   "comp_price_mean": np.array([np.nan]),
    ...                   "list_price": np.array([10.0])})
    >>> float(out["price_ratio"][0]), float(out["day_of_week"][0])
    (1.2, 3.0)
    """

    def __init__(self, pipeline: str, vocab: Mapping[str, Sequence[str]]) -> None:
        self.spec = request_spec(pipeline)
        self._lookups: dict[str, dict[str, int]] = {}
        for name in self.spec.categorical:
            if name not in vocab:
                raise FeatureRepoError(f"vocab.json has no vocabulary for {name!r}")
            self._lookups[name] = {value: code for code, value in enumerate(vocab[name])}
        # The rate table: USD per unit of each currency code it knows.
        self.rates: dict[str, float] = dict(FX_TO_USD) if "currency" in self._lookups else {}
        impl: dict[str, Callable[[Mapping[str, Any]], dict[str, F64]]] = {
            "fraud": self._fraud,
            "pricing": self._pricing,
        }
        self._impl = impl[pipeline]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every column ``compute`` reads: event columns, then online features."""
        return self.spec.event_inputs + self.spec.online_inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names ``compute`` returns, in model order."""
        return self.spec.outputs

    def invalid(self, columns: Mapping[str, Any]) -> list[tuple[str, np.ndarray, list[str]]]:
        """Events these features cannot be computed for: ``(code, rows, messages)`` each.

        Checked on the event columns before anything is read or scored, so such an event
        becomes one dead letter instead of silently NaN features. Today: a currency the
        rate table does not know (``unknown_currency``).
        """
        if not self.rates or "currency" not in columns:
            return []
        currency = np.asarray(columns["currency"], dtype=object)
        known = np.fromiter(map(self.rates.__contains__, currency), dtype=bool,
                            count=currency.size)
        if known.all():
            return []
        rows = np.flatnonzero(~known)
        messages = [f"currency {currency[i]!r} is not in the pipeline's rate table"
                    for i in rows.tolist()]
        return [("unknown_currency", rows, messages)]

    def compute(self, columns: Mapping[str, Any]) -> dict[str, F64]:
        """Compute every output for a batch; ``columns`` must hold every name in ``inputs``."""
        missing = [name for name in self.inputs if name not in columns]
        if missing:
            raise FeaturesError(f"request features need columns {missing}")
        sizes = {len(columns[name]) for name in self.inputs}
        if len(sizes) > 1:
            raise FeaturesError(f"request feature inputs differ in length: {sorted(sizes)}")
        return self._impl(columns)

    # -- pipelines -----------------------------------------------------------------------

    def _fraud(self, c: Mapping[str, Any]) -> dict[str, F64]:
        amount = _in64(c["amount"])
        currency = encode_strings(c["currency"], self._lookups["currency"])
        country = encode_strings(c["country"], self._lookups["country"])
        channel = encode_strings(c["channel"], self._lookups["channel"])
        # A currency missing from the rate table gives NaN (the worker refuses such
        # events before computing: ``invalid``).
        cur = np.asarray(c["currency"], dtype=object).ravel()
        rate = np.fromiter(map(self.rates.get, cur, repeat(np.nan)), dtype=np.float64,
                           count=cur.size)
        amount_usd = amount * rate
        avg = _in64(c["avg_amount_30d"])
        std = _in64(c["std_amount_30d"])
        home = _in64(c["home_country"])
        merchant_country = _in64(c["merchant_country"])
        hour, dow = _hour_dow(_in64(c["event_time"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_amount = np.log1p(np.where(amount_usd >= 0, amount_usd, np.nan))
            amount_to_avg = np.where(avg > 0, amount_usd / avg, np.nan)
            zscore = np.where(std > 0, (amount_usd - avg) / std, np.nan)
        return {
            "amount_usd": amount_usd,
            "log_amount_usd": log_amount,
            "hour_of_day": hour,
            "day_of_week": dow,
            "channel": channel,
            "currency": currency,
            "country": country,
            "mcc": _f64(c["mcc"]),
            "is_foreign": _differs(country, home),
            "is_cross_border": _differs(country, merchant_country),
            "amount_to_avg": amount_to_avg,
            "amount_zscore": zscore,
        }

    def _pricing(self, c: Mapping[str, Any]) -> dict[str, F64]:
        base = _in64(c["base_price"])
        cand = _f64(c["candidate_price"])
        comp_min = _in64(c["comp_price_min"])
        comp_mean = _in64(c["comp_price_mean"])
        list_price = _in64(c["list_price"])
        hour, dow = _hour_dow(_in64(c["event_time"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(base > 0, cand / base, np.nan)
            log_ratio = np.log(np.where(ratio > 0, ratio, np.nan))
            vs_min = np.where(comp_min > 0, cand / comp_min, np.nan)
            vs_mean = np.where(comp_mean > 0, cand / comp_mean, np.nan)
            vs_list = np.where(list_price > 0, cand / list_price, np.nan)
        return {
            "candidate_price": cand,
            "price_ratio": ratio,
            "log_price_ratio": log_ratio,
            "price_vs_comp_min": vs_min,
            "price_vs_comp_mean": vs_mean,
            "price_vs_list": vs_list,
            "hour_of_day": hour,
            "day_of_week": dow,
        }


def compute_request_features(
    pipeline: str, columns: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]
) -> dict[str, F64]:
    """One-shot form of ``RequestFeatures(pipeline, vocab).compute(columns)``."""
    return RequestFeatures(pipeline, vocab).compute(columns)


def _f64(values: Any) -> F64:
    # Copy so callers' buffers are never aliased by an output (e.g. "mcc").
    return np.array(values, dtype=np.float64)


def _in64(values: Any) -> F64:
    # An input only read by arithmetic (never returned): no copy needed.
    return np.asarray(values, dtype=np.float64)


def _hour_dow(t: F64) -> tuple[F64, F64]:
    seconds_of_day = np.mod(t, 86400.0)
    hour = np.floor(seconds_of_day / 60.0) / 60.0
    # 1970-01-01 was a Thursday (Monday = 0 -> Thursday = 3).
    dow = np.mod(np.floor(t / 86400.0) + 3.0, 7.0)
    return hour, dow


def _differs(a: F64, b: F64) -> F64:
    out = (a != b).astype(np.float64)
    out[np.isnan(a) | np.isnan(b)] = np.nan
    return out
