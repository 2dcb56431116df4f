"""Synthetic fraud data: cards, merchants, transactions with attack bursts, fraud labels.

Normal traffic: active cards buy more, mostly at domestic merchants, amounts around the
merchant's typical ticket scaled by the card's habits. Compromised cards (0.4%) produce
bursts of fast, large, mostly foreign e-commerce transactions at risky merchants, so the
velocity features carry real signal. The label is Bernoulli(sigmoid(b + score)) with
``score`` a nonlinear function of the features (velocity, foreign x unusual amount, new
account x e-commerce, risky merchant abroad, night hours...) and ``b`` calibrated to the
target fraud rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from features.exceptions import FeatureDataError
from features.request import FX_TO_USD, RequestFeatures, encode_strings, request_spec
from features.synthetic.common import (
    VELOCITY_WINDOWS,
    Gen,
    Step,
    Tables,
    calibrate_intercept,
    codes_to_str,
    lookup,
    model_features,
    training_table,
    view_table,
    window_velocity,
    zipf,
)

__all__ = ["CARD_ID_BASE", "build"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CARD_ID_BASE = 10_000_000

CURRENCY_OF = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR",
    "NL": "EUR", "BE": "EUR", "SE": "SEK", "NO": "NOK", "DK": "DKK", "FI": "EUR",
    "PL": "PLN", "PT": "EUR", "IE": "EUR", "AT": "EUR", "CH": "CHF", "CA": "CAD",
    "MX": "MXN", "BR": "BRL", "AR": "ARS", "CO": "COP", "IN": "INR", "CN": "CNY",
    "JP": "JPY", "KR": "KRW", "SG": "SGD", "HK": "HKD", "AU": "AUD", "NZ": "NZD",
    "ZA": "ZAR", "NG": "NGN", "KE": "KES", "EG": "EGP", "AE": "AED", "SA": "SAR",
    "TR": "TRY", "RU": "RUB", "UA": "UAH", "RO": "RON", "CZ": "CZK", "HU": "HUF",
    "GR": "EUR", "IL": "ILS", "ID": "IDR", "PH": "PHP", "VN": "VND", "TH": "THB",
    "MY": "MYR", "PK": "PKR",
}  # fmt: skip
# category -> (mcc, base fraud rate, typical ticket USD, P(ecom), relative frequency)
MERCHANT_CATEGORIES = {
    "grocery": (5411, 0.002, 45.0, 0.15, 3.0), "restaurants": (5812, 0.002, 35.0, 0.1, 3.0),
    "fuel": (5541, 0.004, 50.0, 0.02, 2.0), "travel": (4511, 0.012, 420.0, 0.8, 1.0),
    "electronics": (5732, 0.02, 380.0, 0.6, 1.2), "fashion": (5651, 0.008, 90.0, 0.55, 2.0),
    "digital_goods": (5815, 0.03, 25.0, 0.98, 1.0), "gambling": (7995, 0.04, 120.0, 0.9, 0.4),
    "crypto": (6051, 0.05, 600.0, 0.97, 0.3), "pharmacy": (5912, 0.003, 30.0, 0.2, 1.5),
    "utilities": (4900, 0.002, 110.0, 0.7, 1.0),
    "entertainment": (7832, 0.004, 40.0, 0.5, 1.0),
    "jewelry": (5944, 0.025, 700.0, 0.4, 0.3),
    "money_transfer": (4829, 0.045, 300.0, 0.85, 0.4),
    "marketplace": (5399, 0.012, 70.0, 0.9, 1.5),
}  # fmt: skip
RISKY = ("electronics", "digital_goods", "crypto", "jewelry", "money_transfer", "gambling")
CHANNELS = ("pos", "ecom", "atm", "moto")  # index = code in vocab.json's "channel"


@dataclass
class _Cards:
    ids: I64
    home: I64
    premium: npt.NDArray[np.bool_]
    age: npt.NDArray[np.int32]
    avg: F64
    std: npt.NDArray[np.float32]
    n1: npt.NDArray[np.int32]
    n24: npt.NDArray[np.int32]
    n7: I64
    spend24: F64
    chargebacks: I64


@dataclass
class _Merchants:
    ids: npt.NDArray[Any]
    cat: I64
    country: I64
    rate: F64
    cb: npt.NDArray[np.float32]
    ticket: npt.NDArray[np.float32]
    volume: I64
    age: npt.NDArray[np.int32]
    high: npt.NDArray[np.bool_]


@dataclass
class _Events:
    """Events as indices into cards/merchants/vocabularies, sorted by time."""

    card: I64
    merch: I64
    t: F64
    usd: F64
    channel: I64
    country: I64


def build(
    gen: Gen, vocab: dict[str, list[str]], n_cards: int, n_merch: int, n_rows: int,
    fraud_rate: float, step: Step,
) -> tuple[Tables, float]:  # fmt: skip
    """All fraud tables (views, events, training set) and the realised fraud rate."""
    if tuple(vocab["channel"][:4]) != CHANNELS:
        raise FeatureDataError(f"vocab.json 'channel' must start with {CHANNELS}")
    step("cards")
    cards, card_history = _cards(gen, vocab, n_cards)
    step("merchants")
    merchants, merchant_risk = _merchants(gen, vocab, n_merch)
    step("events")
    ev = _draw_events(gen, vocab, cards, merchants, n_rows)
    events, amount = _event_table(gen, vocab, cards, merchants, ev)

    step("velocity + features")
    # Velocity sums the raw event amount, exactly what the worker feeds
    # features.push.VelocityUpdater (stream.worker passes the event's "amount").
    velocity: dict[str, F64] = {}
    for suffix, window in VELOCITY_WINDOWS.items():
        cnt, tot = window_velocity(ev.card, ev.t, amount, window)
        velocity[f"velocity_count_{suffix}"] = cnt
        velocity[f"velocity_sum_{suffix}"] = tot
    card_velocity = _velocity_table(gen, cards, ev, amount)
    online = _online_columns(vocab, cards, merchants, ev) | velocity
    rf = RequestFeatures("fraud", vocab)
    event_cols = {name: events.column(name).to_numpy(zero_copy_only=False)
                  for name in rf.spec.event_inputs}  # fmt: skip
    req = rf.compute({**event_cols, **online})

    step("labels")
    score = _fraud_score(online, req)
    b0 = calibrate_intercept(score, fraud_rate)
    label = (gen.rng.random(len(ev.t)) < 1.0 / (1.0 + np.exp(-(b0 + score)))).astype(np.float64)

    feats = {name: online[name] for name in model_features("fraud")} | req
    ids = {name: events.column(name) for name in ("event_id", "card_id", "merchant_id",
                                                  "event_time")}  # fmt: skip
    meta = {
        "label": "label",
        "features": list(feats),
        "categorical": ["home_country", "merchant_category", "merchant_country",
                        *request_spec("fraud").categorical],
        "objective": "binary",
    }  # fmt: skip
    tables: Tables = {
        "card_history": (card_history, None),
        "merchant_risk": (merchant_risk, None),
        "card_velocity": (card_velocity, None),
        "events": (events.append_column("label", pa.array(label)), None),
        "training": (training_table(ids, feats, label), meta),
    }
    return tables, float(label.mean())


def _cards(gen: Gen, vocab: dict[str, list[str]], n: int) -> tuple[_Cards, pa.Table]:
    rng = gen.rng
    countries = vocab["home_country"]
    premium = rng.random(n) < 0.15
    age = np.clip(rng.exponential(900.0, n), 1, 7300).astype(np.int32)
    avg = rng.lognormal(3.6, 0.7, n) * np.where(premium, 2.0, 1.0)
    n7 = rng.poisson(rng.gamma(2.0, 1.5, n) * 7.0).astype(np.int64)
    n24 = rng.binomial(n7, np.clip(rng.normal(1 / 7, 0.05, n), 0.0, 1.0)).astype(np.int32)
    c = _Cards(
        ids=np.arange(n, dtype=np.int64) + CARD_ID_BASE,
        home=rng.choice(len(countries), n, p=zipf(len(countries), 1.1)),
        premium=premium,
        age=age,
        avg=avg,
        std=(avg * rng.uniform(0.3, 1.2, n)).astype(np.float32),
        n1=rng.binomial(n24, 1 / 24).astype(np.int32),
        n24=n24,
        n7=n7,
        spend24=n24 * avg * rng.lognormal(0.0, 0.3, n),
        chargebacks=rng.poisson(0.04 + 0.25 * (age < 60)).astype(np.int64),
    )
    # Feast stores UnixTimestamp values in whole seconds; null when never charged back.
    cb_age = rng.uniform(86400.0, 365 * 86400.0, n).round()
    last_cb = np.where(c.chargebacks > 0, gen.now - cb_age, np.nan)
    last_cb_arr = pa.array(
        np.round(np.nan_to_num(last_cb) * 1e6).astype(np.int64),
        type=pa.timestamp("us", tz="UTC"),
        mask=np.isnan(last_cb),
    )
    table = view_table(
        {"card_id": c.ids},
        {
            "avg_amount_30d": c.avg, "std_amount_30d": c.std, "spend_24h": c.spend24,
            "txn_count_1h": c.n1, "txn_count_24h": c.n24, "txn_count_7d": c.n7,
            "account_age_days": c.age, "chargeback_count": c.chargebacks,
            "home_country": codes_to_str(c.home, countries), "is_premium": c.premium,
        },
        {
            "card_id": pa.int64(), "avg_amount_30d": pa.float64(), "std_amount_30d": pa.float32(),
            "spend_24h": pa.float64(), "txn_count_1h": pa.int32(), "txn_count_24h": pa.int32(),
            "txn_count_7d": pa.int64(), "account_age_days": pa.int32(),
            "chargeback_count": pa.int64(), "home_country": pa.string(), "is_premium": pa.bool_(),
        },
        gen.snapshot_times(n),
    ).append_column("last_chargeback_at", last_cb_arr)  # fmt: skip
    return c, table


def _merchants(gen: Gen, vocab: dict[str, list[str]], n: int) -> tuple[_Merchants, pa.Table]:
    rng = gen.rng
    cats = vocab["merchant_category"]
    countries = vocab["merchant_country"]
    info = np.array([MERCHANT_CATEGORIES[c][1:] for c in cats])  # rate, ticket, p_ecom, freq
    cat = rng.choice(len(cats), n, p=info[:, 3] / info[:, 3].sum())
    rate = rng.beta(2.0, 2.0 / info[cat, 0] - 2.0)
    always_high = [cats.index(c) for c in ("gambling", "crypto") if c in cats]
    m = _Merchants(
        ids=np.array([f"m{i:06d}" for i in range(n)], dtype=object),
        cat=cat,
        country=rng.choice(len(countries), n, p=zipf(len(countries), 1.1)),
        rate=rate,
        cb=(rate * 0.6 + rng.normal(0, 0.002, n)).clip(0, 1).astype(np.float32),
        ticket=(info[cat, 1] * rng.lognormal(0, 0.3, n)).astype(np.float32),
        volume=rng.lognormal(7.0, 1.5, n).astype(np.int64) + 1,
        age=np.clip(rng.exponential(1500.0, n), 1, 9000).astype(np.int32),
        high=(rate > 0.03) | np.isin(cat, always_high),
    )
    table = view_table(
        {"merchant_id": m.ids},
        {
            "merchant_fraud_rate_90d": m.rate, "merchant_chargeback_rate": m.cb,
            "merchant_avg_ticket": m.ticket, "merchant_txn_volume_30d": m.volume,
            "merchant_age_days": m.age, "merchant_category": codes_to_str(m.cat, cats),
            "merchant_country": codes_to_str(m.country, countries),
            "merchant_is_high_risk": m.high,
        },
        {
            "merchant_id": pa.string(), "merchant_fraud_rate_90d": pa.float64(),
            "merchant_chargeback_rate": pa.float32(), "merchant_avg_ticket": pa.float32(),
            "merchant_txn_volume_30d": pa.int64(), "merchant_age_days": pa.int32(),
            "merchant_category": pa.string(), "merchant_country": pa.string(),
            "merchant_is_high_risk": pa.bool_(),
        },
        gen.snapshot_times(n),
    )  # fmt: skip
    return m, table


def _draw_events(
    gen: Gen, vocab: dict[str, list[str]], c: _Cards, m: _Merchants, n_rows: int
) -> _Events:
    rng = gen.rng
    cats = vocab["merchant_category"]
    n_countries = len(vocab["country"])
    n_cards, n_merch = len(c.ids), len(m.ids)
    n_attack_cards = max(1, int(n_cards * 0.004))
    burst = rng.poisson(3.0, n_attack_cards) + 2
    n_attack = min(int(burst.sum()), n_rows // 4)
    n_normal = n_rows - n_attack

    # normal traffic: active cards buy more, mostly from domestic merchants
    card = rng.choice(n_cards, n_normal, p=(c.n7 + 1.0) / float((c.n7 + 1.0).sum()))
    merch = rng.choice(n_merch, n_normal, p=m.volume / m.volume.sum())
    by_country = np.argsort(m.country, kind="stable")
    starts = np.searchsorted(m.country[by_country], np.arange(n_countries))
    counts = np.bincount(m.country, minlength=n_countries)
    home = c.home[card]
    domestic = (rng.random(n_normal) < 0.88) & (counts[home] > 0)
    pick = starts[home] + (rng.random(n_normal) * counts[home]).astype(np.int64)
    merch[domestic] = by_country[np.minimum(pick[domestic], n_merch - 1)]
    habit = np.sqrt(c.avg[card] / np.exp(3.6 + 0.245))  # card's spend vs the average card
    usd = m.ticket[merch] * rng.lognormal(0.0, 0.6, n_normal) * habit
    p_ecom = np.array([MERCHANT_CATEGORIES[k][3] for k in cats])[m.cat[merch]]
    channel = np.where(rng.random(n_normal) < p_ecom, 1, 0)
    channel = np.where((channel == 0) & (rng.random(n_normal) < 0.06), 2, channel)
    channel = np.where((channel == 1) & (rng.random(n_normal) < 0.05), 3, channel)
    # where it happens: the terminal's country, or (e-commerce) mostly the shopper's
    at_merchant = m.country[merch]
    country = np.where(channel == 1, np.where(rng.random(n_normal) < 0.9, home, at_merchant),
                       at_merchant)  # fmt: skip

    # attack bursts: compromised cards, fast foreign e-commerce at risky merchants
    victims = rng.choice(n_cards, n_attack_cards, replace=False)
    a_card = np.repeat(victims, burst)[:n_attack]
    a_start = np.repeat(gen.event_times(n_attack_cards), burst)[:n_attack]
    a_time = np.minimum(a_start + rng.uniform(0, 900.0, n_attack).round(3), gen.now - 1.0)
    risky = np.flatnonzero(np.isin(m.cat, [cats.index(k) for k in RISKY if k in cats]))
    if len(risky) == 0:
        risky = np.arange(n_merch)
    a_country = np.where(rng.random(n_attack) < 0.7, rng.choice(n_countries, n_attack),
                         c.home[a_card])  # fmt: skip

    ev = _Events(
        card=np.concatenate([card, a_card]),
        merch=np.concatenate([merch, risky[rng.integers(0, len(risky), n_attack)]]),
        t=np.concatenate([gen.event_times(n_normal), a_time]),
        usd=np.concatenate([usd, c.avg[a_card] * rng.uniform(2.0, 10.0, n_attack)]),
        channel=np.concatenate([channel, np.where(rng.random(n_attack) < 0.85, 1, 3)]),
        country=np.concatenate([country, a_country]),
    )
    order = np.argsort(ev.t, kind="stable")
    return _Events(*(getattr(ev, f)[order] for f in ("card", "merch", "t", "usd", "channel",
                                                      "country")))  # fmt: skip


def _event_table(
    gen: Gen, vocab: dict[str, list[str]], c: _Cards, m: _Merchants, ev: _Events
) -> tuple[pa.Table, F64]:
    """Raw input events (the worker's schema) and their amounts (event currency)."""
    countries = vocab["country"]
    n = len(ev.t)
    currency = np.array([CURRENCY_OF.get(k, "USD") for k in countries], dtype=object)[ev.country]
    currency = np.where((ev.channel == 1) & (gen.rng.random(n) < 0.2), "USD", currency)
    rate = np.array([FX_TO_USD[k] for k in currency])
    amount = np.maximum(np.round(ev.usd / rate, 2), 0.01)
    mcc = np.array([MERCHANT_CATEGORIES[k][0] for k in vocab["merchant_category"]])
    table = pa.table({
        "event_id": pa.array([f"tx-{i:09d}" for i in range(n)], type=pa.string()),
        "card_id": pa.array(c.ids[ev.card]),
        "merchant_id": pa.array(m.ids[ev.merch], type=pa.string()),
        "amount": pa.array(amount),
        "currency": pa.array(currency, type=pa.string()),
        "country": pa.array(codes_to_str(ev.country, countries), type=pa.string()),
        "channel": pa.array(np.array(CHANNELS, dtype=object)[ev.channel], type=pa.string()),
        "mcc": pa.array(mcc.astype(np.int64)[m.cat[ev.merch]]),
        "event_time": pa.array(ev.t),
    })  # fmt: skip
    return table, amount


def _velocity_table(gen: Gen, c: _Cards, ev: _Events, amount: F64) -> pa.Table:
    """Per-card velocity as of "now" (all events counted): the push source's batch side."""
    n_cards = len(c.ids)
    seen = np.zeros(n_cards, dtype=bool)
    seen[ev.card] = True
    cards = np.flatnonzero(seen)
    cols: dict[str, Any] = {}
    types: dict[str, pa.DataType] = {"card_id": pa.int64()}
    for suffix, window in VELOCITY_WINDOWS.items():
        recent = ev.t >= gen.now - window
        cols[f"velocity_count_{suffix}"] = np.bincount(ev.card[recent], minlength=n_cards)[cards]
        cols[f"velocity_sum_{suffix}"] = np.bincount(
            ev.card[recent], weights=amount[recent], minlength=n_cards
        )[cards]
        types[f"velocity_count_{suffix}"] = pa.int64()
        types[f"velocity_sum_{suffix}"] = pa.float64()
    stamps = np.full(len(cards), gen.now - 1.0)
    return view_table({"card_id": c.ids[cards]}, cols, types, stamps).drop_columns(["created"])


def _online_columns(
    vocab: dict[str, list[str]], c: _Cards, m: _Merchants, ev: _Events
) -> dict[str, F64]:
    """Each event's card and merchant features as the online reader decodes them."""
    ci, mi = ev.card, ev.merch

    def codes(idx: I64, values: list[str], name: str) -> F64:
        return encode_strings(codes_to_str(idx, values), lookup(vocab[name]))

    return {
        "avg_amount_30d": c.avg[ci], "std_amount_30d": c.std[ci].astype(np.float64),
        "spend_24h": c.spend24[ci], "txn_count_1h": c.n1[ci].astype(np.float64),
        "txn_count_24h": c.n24[ci].astype(np.float64),
        "txn_count_7d": c.n7[ci].astype(np.float64),
        "account_age_days": c.age[ci].astype(np.float64),
        "chargeback_count": c.chargebacks[ci].astype(np.float64),
        "home_country": codes(c.home[ci], vocab["home_country"], "home_country"),
        "is_premium": c.premium[ci].astype(np.float64),
        "merchant_fraud_rate_90d": m.rate[mi],
        "merchant_chargeback_rate": m.cb[mi].astype(np.float64),
        "merchant_avg_ticket": m.ticket[mi].astype(np.float64),
        "merchant_txn_volume_30d": m.volume[mi].astype(np.float64),
        "merchant_age_days": m.age[mi].astype(np.float64),
        "merchant_category": codes(m.cat[mi], vocab["merchant_category"], "merchant_category"),
        "merchant_country": codes(m.country[mi], vocab["merchant_country"], "merchant_country"),
        "merchant_is_high_risk": m.high[mi].astype(np.float64),
    }  # fmt: skip


def _fraud_score(online: dict[str, F64], req: dict[str, F64]) -> F64:
    """The true (hidden) fraud log-odds, up to the intercept: nonlinear, with interactions."""
    ecom = req["channel"] == CHANNELS.index("ecom")
    hour = req["hour_of_day"]
    ratio = np.nan_to_num(req["amount_to_avg"], nan=1.0)
    foreign = np.nan_to_num(req["is_foreign"])
    cross = np.nan_to_num(req["is_cross_border"])
    return np.asarray(
        1.5 * (online["velocity_count_10m"] >= 2)
        + 0.7 * np.log1p(online["velocity_count_1h"])
        + 1.3 * foreign * (ratio > 3.0)
        + 0.8 * np.clip(np.log(np.maximum(ratio, 1e-3)), -1.0, 3.0)
        + 22.0 * online["merchant_fraud_rate_90d"]
        + 0.9 * ecom * (online["account_age_days"] < 90)
        + 0.5 * (hour < 5)
        + 0.5 * (online["chargeback_count"] > 0)
        + 0.6 * online["merchant_is_high_risk"] * cross
        - 0.4 * online["is_premium"],
        dtype=np.float64,
    )
