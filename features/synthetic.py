"""Synthetic offline feature data and labelled training sets for both pipelines.

``generate(pipeline, ...)`` writes, into ``$STREAMSCORE_HOME/data/<pipeline>/``:

- one parquet file per feature view (the FileSources of the pipeline's Feast repo), one
  row per entity, timestamped 24-26 h before "now" (inside every view's TTL, so the
  materialization window and the online reader both see them);
- ``events.parquet``: raw input events (exactly the worker's input fields) over the last
  24 h, sorted by time, for the load generator;
- ``training.parquet`` + ``training.json``: those events joined with their entities'
  features as of event time (the snapshot precedes every event by construction) plus the
  request-time features computed by ``features.request`` (the worker's own function), and
  a label drawn from a known nonlinear function of the features.

Fraud labels: Bernoulli(sigmoid(logit)) with interactions (foreign x unusual amount, new
account x e-commerce, bursts of card velocity, risky merchants abroad...), intercept
calibrated to the target fraud rate. Compromised cards produce bursts of fast, foreign,
large e-commerce transactions, so velocity features carry real signal. Pricing labels:
units demanded, Poisson around a demand curve ``price_ratio ** elasticity`` x competitor
pressure x hour/day seasonality x store traffic, capped by stock.

Velocity features (``card_velocity``) count the card's *earlier* events (the current one
excluded) over the last 10 min / 1 h and sum their ``amount_usd``; the worker must update
them the same way. Vectorized numpy throughout; seeded; a progress bar.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from features.exceptions import FeatureDataError
from features.repo import PIPELINES, data_dir, load_vocab, repo_path
from features.request import RequestFeatures, encode_strings, request_spec

__all__ = ["VELOCITY_WINDOWS", "GenerateResult", "generate", "window_velocity"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# name suffix -> window seconds of the card_velocity features
VELOCITY_WINDOWS = {"10m": 600.0, "1h": 3600.0}
CARD_ID_BASE = 10_000_000
SKU_ID_BASE = 500_000

_CURRENCY_OF = {
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
# category -> (mcc, base fraud rate, typical ticket USD, P(ecom))
_MERCHANT_CATEGORIES = {
    "grocery": (5411, 0.002, 45.0, 0.15), "restaurants": (5812, 0.002, 35.0, 0.1),
    "fuel": (5541, 0.004, 50.0, 0.02), "travel": (4511, 0.012, 420.0, 0.8),
    "electronics": (5732, 0.02, 380.0, 0.6), "fashion": (5651, 0.008, 90.0, 0.55),
    "digital_goods": (5815, 0.03, 25.0, 0.98), "gambling": (7995, 0.04, 120.0, 0.9),
    "crypto": (6051, 0.05, 600.0, 0.97), "pharmacy": (5912, 0.003, 30.0, 0.2),
    "utilities": (4900, 0.002, 110.0, 0.7), "entertainment": (7832, 0.004, 40.0, 0.5),
    "jewelry": (5944, 0.025, 700.0, 0.4), "money_transfer": (4829, 0.045, 300.0, 0.85),
    "marketplace": (5399, 0.012, 70.0, 0.9),
}  # fmt: skip
_RISKY = ("electronics", "digital_goods", "crypto", "jewelry", "money_transfer", "gambling")
# sku category -> (typical list price, elasticity centre)
_SKU_CATEGORIES = {
    "grocery": (4.0, -2.2), "beverages": (3.0, -2.5), "household": (8.0, -1.8),
    "personal_care": (9.0, -1.6), "electronics": (180.0, -1.2), "apparel": (35.0, -1.5),
    "toys": (25.0, -1.4), "home": (45.0, -1.3), "garden": (30.0, -1.1),
    "sports": (55.0, -1.3), "books": (15.0, -0.9), "pet": (20.0, -1.7),
}  # fmt: skip


@dataclass
class GenerateResult:
    """What ``generate`` wrote: file paths, row counts, timings."""

    pipeline: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    label_mean: float = float("nan")


def generate(
    pipeline: str,
    out_dir: str | Path | None = None,
    *,
    rows: int | None = None,
    seed: int = 7,
    cards: int = 100_000,
    merchants: int = 5_000,
    skus: int = 20_000,
    stores: int = 200,
    fraud_rate: float = 0.02,
    now: float | None = None,
    progress: bool = True,
) -> GenerateResult:
    """Generate the pipeline's offline data, events and training set (see module doc)."""
    if pipeline not in PIPELINES:
        raise FeatureDataError(f"unknown pipeline {pipeline!r}")
    sizes = {"cards": cards, "merchants": merchants, "skus": skus, "stores": stores}
    if (rows is not None and rows < 1) or any(v < 1 for v in sizes.values()):
        raise FeatureDataError(f"sizes must be positive: rows={rows}, {sizes}")
    if not 0.0 < fraud_rate < 0.5:
        raise FeatureDataError("fraud rate must be in (0, 0.5)")
    out = Path(out_dir) if out_dir is not None else data_dir(pipeline)
    out.mkdir(parents=True, exist_ok=True)
    vocab = load_vocab(repo_path(pipeline))
    gen = _Gen(np.random.default_rng(seed), float(now if now is not None else time.time()))
    result = GenerateResult(pipeline, out)
    started = time.perf_counter()
    with _progress(progress) as step:
        if pipeline == "fraud":
            tables, label_mean = _fraud(
                gen, vocab, cards, merchants, rows or 2 * cards, fraud_rate, step
            )
        else:
            tables, label_mean = _pricing(gen, vocab, skus, stores, rows or 10 * skus, step)
        step("writing parquet")
        for name, (table, extra) in tables.items():
            path = out / f"{name}.parquet"
            pq.write_table(table, path, row_group_size=100_000)
            result.files[name] = path
            result.rows[name] = table.num_rows
            if extra is not None:
                meta = out / f"{name}.json"
                meta.write_text(json.dumps(extra, indent=2) + "\n")
                result.files[f"{name}.json"] = meta
    result.seconds = time.perf_counter() - started
    result.label_mean = label_mean
    return result


# -- shared helpers ------------------------------------------------------------------


class _Gen:
    """The seeded generator and the snapshot/event clock."""

    def __init__(self, rng: np.random.Generator, now: float) -> None:
        self.rng = rng
        self.now = float(np.floor(now))

    def snapshot_times(self, n: int) -> F64:
        # Daily batch snapshots, 24-26 h old: before every training event.
        return self.now - 86400.0 - self.rng.uniform(0.0, 7200.0, n).round()

    def event_times(self, n: int) -> F64:
        return self.now - self.rng.uniform(60.0, 86400.0, n).round(3)


def _ts(seconds: F64) -> pa.Array:
    micros = np.round(seconds * 1e6).astype(np.int64)
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"))


def _zipf(n: int, s: float) -> F64:
    w = 1.0 / np.arange(1, n + 1) ** s
    return np.asarray(w / w.sum(), dtype=np.float64)


def _codes_to_str(codes: I64, values: list[str]) -> npt.NDArray[Any]:
    return np.asarray(values, dtype=object)[codes]


def _view_table(
    keys: Mapping[str, Any], cols: Mapping[str, Any], types: Mapping[str, pa.DataType], ts: F64
) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for name, values in {**keys, **cols}.items():
        arrays[name] = pa.array(values, type=types[name])
    arrays["event_timestamp"] = _ts(ts)
    arrays["created"] = _ts(ts)
    return pa.table(arrays)


def _progress(enabled: bool) -> Any:
    """A context manager yielding ``step(description)``; a rich bar when enabled."""
    from contextlib import contextmanager

    @contextmanager
    def run() -> Any:
        if not enabled:
            yield lambda _desc: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]generate[/] {task.description:<24}"),
            BarColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task("start", total=7)
            first = [True]

            def step(desc: str) -> None:
                if not first[0]:
                    bar.advance(task)
                first[0] = False
                bar.update(task, description=desc)

            yield step
            bar.update(task, completed=7, description="done")

    return run()


def window_velocity(
    entity: I64, t: F64, amount: F64, window: float
) -> tuple[F64, F64]:
    """Count and amount sum of each event's *earlier* events of the same entity in
    ``[t - window, t)`` (ties in time count as earlier when they come first)."""
    n = len(t)
    order = np.lexsort((t, entity))
    ent_s, t_s, a_s = entity[order], t[order], amount[order]
    # One sortable key per event: entity blocks laid out far apart on one time axis.
    span = float(np.ptp(t)) + 2.0 * window + 1.0 if n else 1.0
    key = (ent_s - ent_s.min(initial=0)).astype(np.float64) * span + (t_s - t_s.min(initial=0))
    lo = np.searchsorted(key, key - window, side="left")
    idx = np.arange(n)
    csum = np.concatenate([[0.0], np.cumsum(a_s)])
    count_s = (idx - lo).astype(np.float64)
    sum_s = csum[idx] - csum[lo]
    count = np.empty(n)
    total = np.empty(n)
    count[order] = count_s
    total[order] = sum_s
    return count, total


def _calibrate_intercept(score: F64, target: float) -> float:
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.mean(1.0 / (1.0 + np.exp(-(mid + score))))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _training_table(
    ids: Mapping[str, pa.Array], feats: Mapping[str, F64], label: F64
) -> pa.Table:
    cols: dict[str, Any] = dict(ids)
    for name, values in feats.items():
        cols[name] = pa.array(values, type=pa.float64())
    cols["label"] = pa.array(label, type=pa.float64())
    return pa.table(cols)


Step = Callable[[str], None]
Tables = dict[str, tuple[pa.Table, dict[str, Any] | None]]


# -- fraud ---------------------------------------------------------------------------


def _fraud(
    gen: _Gen, vocab: dict[str, list[str]], n_cards: int, n_merch: int, n_rows: int,
    fraud_rate: float, step: Step,
) -> tuple[Tables, float]:  # fmt: skip
    rng = gen.rng
    countries = vocab["country"]
    n_c = len(countries)
    country_w = _zipf(n_c, 1.1)

    step("cards")
    card_ids = np.arange(n_cards, dtype=np.int64) + CARD_ID_BASE
    home = rng.choice(n_c, n_cards, p=country_w)
    premium = rng.random(n_cards) < 0.15
    age = np.clip(rng.exponential(900.0, n_cards), 1, 7300).astype(np.int32)
    avg = rng.lognormal(3.6, 0.7, n_cards) * np.where(premium, 2.0, 1.0)
    std = (avg * rng.uniform(0.3, 1.2, n_cards)).astype(np.float32)
    activity = rng.gamma(2.0, 1.5, n_cards)
    n7 = rng.poisson(activity * 7.0).astype(np.int64)
    n24 = rng.binomial(n7, np.clip(rng.normal(1 / 7, 0.05, n_cards), 0.0, 1.0)).astype(np.int32)
    n1 = rng.binomial(n24, 1 / 24).astype(np.int32)
    spend24 = n24 * avg * rng.lognormal(0.0, 0.3, n_cards)
    chargebacks = rng.poisson(0.04 + 0.25 * (age < 60)).astype(np.int64)
    cb_age = rng.uniform(86400.0, 365 * 86400.0, n_cards).round()  # Feast keeps whole seconds
    last_cb = np.where(chargebacks > 0, gen.now - cb_age, np.nan)
    card_ts = gen.snapshot_times(n_cards)
    last_cb_arr = pa.array(
        np.round(np.nan_to_num(last_cb) * 1e6).astype(np.int64),
        type=pa.timestamp("us", tz="UTC"),
        mask=np.isnan(last_cb),
    )
    card_history = _view_table(
        {"card_id": card_ids},
        {
            "avg_amount_30d": avg, "std_amount_30d": std, "spend_24h": spend24,
            "txn_count_1h": n1, "txn_count_24h": n24, "txn_count_7d": n7,
            "account_age_days": age, "chargeback_count": chargebacks,
            "home_country": _codes_to_str(home, countries), "is_premium": premium,
        },
        {
            "card_id": pa.int64(), "avg_amount_30d": pa.float64(), "std_amount_30d": pa.float32(),
            "spend_24h": pa.float64(), "txn_count_1h": pa.int32(), "txn_count_24h": pa.int32(),
            "txn_count_7d": pa.int64(), "account_age_days": pa.int32(),
            "chargeback_count": pa.int64(), "home_country": pa.string(), "is_premium": pa.bool_(),
        },
        card_ts,
    ).append_column("last_chargeback_at", last_cb_arr)  # fmt: skip

    step("merchants")
    cats = vocab["merchant_category"]
    cat_info = np.array([_MERCHANT_CATEGORIES[c][1:] for c in cats])  # rate, ticket, p_ecom
    cat_w = np.array([3, 3, 2, 1, 1.2, 2, 1, 0.4, 0.3, 1.5, 1, 1, 0.3, 0.4, 1.5])[: len(cats)]
    m_cat = rng.choice(len(cats), n_merch, p=cat_w / cat_w.sum())
    m_country = rng.choice(n_c, n_merch, p=country_w)
    base_rate = cat_info[m_cat, 0]
    m_rate = rng.beta(2.0, 2.0 / base_rate - 2.0)
    m_cb = (m_rate * 0.6 + rng.normal(0, 0.002, n_merch)).clip(0, 1).astype(np.float32)
    m_ticket = (cat_info[m_cat, 1] * rng.lognormal(0, 0.3, n_merch)).astype(np.float32)
    m_volume = rng.lognormal(7.0, 1.5, n_merch).astype(np.int64) + 1
    m_age = np.clip(rng.exponential(1500.0, n_merch), 1, 9000).astype(np.int32)
    m_high = (m_rate > 0.03) | np.isin(m_cat, [cats.index(c) for c in ("gambling", "crypto")])
    merchant_ids = np.array([f"m{i:06d}" for i in range(n_merch)], dtype=object)
    merchant_risk = _view_table(
        {"merchant_id": merchant_ids},
        {
            "merchant_fraud_rate_90d": m_rate, "merchant_chargeback_rate": m_cb,
            "merchant_avg_ticket": m_ticket, "merchant_txn_volume_30d": m_volume,
            "merchant_age_days": m_age, "merchant_category": _codes_to_str(m_cat, cats),
            "merchant_country": _codes_to_str(m_country, countries),
            "merchant_is_high_risk": m_high,
        },
        {
            "merchant_id": pa.string(), "merchant_fraud_rate_90d": pa.float64(),
            "merchant_chargeback_rate": pa.float32(), "merchant_avg_ticket": pa.float32(),
            "merchant_txn_volume_30d": pa.int64(), "merchant_age_days": pa.int32(),
            "merchant_category": pa.string(), "merchant_country": pa.string(),
            "merchant_is_high_risk": pa.bool_(),
        },
        gen.snapshot_times(n_merch),
    )  # fmt: skip

    step("events")
    n_attack_cards = max(1, int(n_cards * 0.004))
    burst = rng.poisson(3.0, n_attack_cards) + 2
    n_attack = min(int(burst.sum()), n_rows // 4)
    n_normal = n_rows - n_attack
    # normal traffic: active cards buy more, mostly from domestic merchants
    card_p = (n7 + 1.0) / float((n7 + 1.0).sum())
    ev_card = rng.choice(n_cards, n_normal, p=card_p)
    merch_p = m_volume / m_volume.sum()
    ev_merch = rng.choice(n_merch, n_normal, p=merch_p)
    by_country = np.argsort(m_country, kind="stable")
    starts = np.searchsorted(m_country[by_country], np.arange(n_c))
    counts = np.bincount(m_country, minlength=n_c)
    hc = home[ev_card]
    domestic = (rng.random(n_normal) < 0.88) & (counts[hc] > 0)
    pick = starts[hc] + (rng.random(n_normal) * counts[hc]).astype(np.int64)
    ev_merch[domestic] = by_country[np.minimum(pick[domestic], n_merch - 1)]
    ev_time = gen.event_times(n_normal)
    ticket_scale = np.sqrt(avg[ev_card] / np.exp(3.6 + 0.245))
    ev_usd = m_ticket[ev_merch] * rng.lognormal(0.0, 0.6, n_normal) * ticket_scale
    p_ecom = cat_info[m_cat[ev_merch], 2]
    u = rng.random(n_normal)
    channel = np.where(u < p_ecom, 1, 0)  # 0 pos, 1 ecom, 2 atm, 3 moto
    channel = np.where((channel == 0) & (rng.random(n_normal) < 0.06), 2, channel)
    channel = np.where((channel == 1) & (rng.random(n_normal) < 0.05), 3, channel)
    # where the transaction happens: the terminal's country, or the shopper's for e-commerce
    at_merchant = m_country[ev_merch]
    ecom_country = np.where(rng.random(n_normal) < 0.9, hc, at_merchant)
    ev_country = np.where(channel == 1, ecom_country, at_merchant)

    # attack bursts: compromised cards, fast foreign e-commerce at risky merchants
    a_cards = rng.choice(n_cards, n_attack_cards, replace=False)
    a_card = np.repeat(a_cards, burst)[:n_attack]
    a_start = np.repeat(gen.event_times(n_attack_cards), burst)[:n_attack]
    a_time = np.minimum(a_start + rng.uniform(0, 900.0, n_attack).round(3), gen.now - 1.0)
    risky = np.flatnonzero(np.isin(m_cat, [cats.index(c) for c in _RISKY if c in cats]))
    if len(risky) == 0:
        risky = np.arange(n_merch)
    a_merch = risky[rng.integers(0, len(risky), n_attack)]
    a_usd = avg[a_card] * rng.uniform(2.0, 10.0, n_attack)
    a_channel = np.where(rng.random(n_attack) < 0.85, 1, 3)
    a_country = np.where(rng.random(n_attack) < 0.7, rng.choice(n_c, n_attack), home[a_card])

    card_i = np.concatenate([ev_card, a_card])
    merch_i = np.concatenate([ev_merch, a_merch])
    t = np.concatenate([ev_time, a_time])
    usd = np.concatenate([ev_usd, a_usd])
    chan_i = np.concatenate([channel, a_channel])
    ctry_i = np.concatenate([ev_country, a_country])
    order = np.argsort(t, kind="stable")
    card_i, merch_i, t, usd, chan_i, ctry_i = (
        a[order] for a in (card_i, merch_i, t, usd, chan_i, ctry_i)
    )
    n = len(t)
    ev_countries = _codes_to_str(ctry_i, countries)
    currency = np.array([_CURRENCY_OF.get(c, "USD") for c in countries], dtype=object)[ctry_i]
    currency = np.where((chan_i == 1) & (rng.random(n) < 0.2), "USD", currency)
    from features.request import FX_TO_USD

    rate = np.array([FX_TO_USD[c] for c in currency])
    amount = np.maximum(np.round(usd / rate, 2), 0.01)
    mcc = np.array([_MERCHANT_CATEGORIES[c][0] for c in cats], dtype=np.int64)[m_cat[merch_i]]
    events = pa.table({
        "event_id": pa.array([f"tx-{i:09d}" for i in range(n)], type=pa.string()),
        "card_id": pa.array(card_ids[card_i]),
        "merchant_id": pa.array(merchant_ids[merch_i], type=pa.string()),
        "amount": pa.array(amount),
        "currency": pa.array(currency, type=pa.string()),
        "country": pa.array(ev_countries, type=pa.string()),
        "channel": pa.array(np.array(vocab["channel"], dtype=object)[chan_i], type=pa.string()),
        "mcc": pa.array(mcc),
        "event_time": pa.array(t),
    })  # fmt: skip

    step("velocity + features")
    rf = RequestFeatures("fraud", vocab)
    amount_usd = amount * rate
    velocity: dict[str, F64] = {}
    for suffix, window in VELOCITY_WINDOWS.items():
        cnt, tot = window_velocity(card_i.astype(np.int64), t, amount_usd, window)
        velocity[f"velocity_count_{suffix}"] = cnt
        velocity[f"velocity_sum_{suffix}"] = tot
    # Per-card velocity as of "now" (last event included) backs the push source.
    last = np.zeros(n_cards, dtype=bool)
    last[card_i] = True
    v_cards = np.flatnonzero(last)
    v_cols: dict[str, Any] = {}
    v_ts = np.full(len(v_cards), gen.now - 1.0)
    for suffix, window in VELOCITY_WINDOWS.items():
        recent = t >= gen.now - window
        v_cols[f"velocity_count_{suffix}"] = np.bincount(card_i[recent], minlength=n_cards)[v_cards]
        v_cols[f"velocity_sum_{suffix}"] = np.bincount(
            card_i[recent], weights=amount_usd[recent], minlength=n_cards
        )[v_cards]
    vel_types = {f"velocity_count_{s}": pa.int64() for s in VELOCITY_WINDOWS}
    vel_types |= {f"velocity_sum_{s}": pa.float64() for s in VELOCITY_WINDOWS}
    card_velocity = _view_table(
        {"card_id": card_ids[v_cards]}, v_cols, {"card_id": pa.int64(), **vel_types}, v_ts
    ).drop_columns(["created"])

    online: dict[str, F64] = {
        "avg_amount_30d": avg[card_i], "std_amount_30d": std[card_i].astype(np.float64),
        "spend_24h": spend24[card_i], "txn_count_1h": n1[card_i].astype(np.float64),
        "txn_count_24h": n24[card_i].astype(np.float64),
        "txn_count_7d": n7[card_i].astype(np.float64),
        "account_age_days": age[card_i].astype(np.float64),
        "chargeback_count": chargebacks[card_i].astype(np.float64),
        "home_country": encode_strings(_codes_to_str(home[card_i], countries),
                                       _lookup(vocab["home_country"])),
        "is_premium": premium[card_i].astype(np.float64),
        "merchant_fraud_rate_90d": m_rate[merch_i],
        "merchant_chargeback_rate": m_cb[merch_i].astype(np.float64),
        "merchant_avg_ticket": m_ticket[merch_i].astype(np.float64),
        "merchant_txn_volume_30d": m_volume[merch_i].astype(np.float64),
        "merchant_age_days": m_age[merch_i].astype(np.float64),
        "merchant_category": encode_strings(_codes_to_str(m_cat[merch_i], cats),
                                            _lookup(vocab["merchant_category"])),
        "merchant_country": encode_strings(_codes_to_str(m_country[merch_i], countries),
                                           _lookup(vocab["merchant_country"])),
        "merchant_is_high_risk": m_high[merch_i].astype(np.float64),
        **velocity,
    }  # fmt: skip
    event_cols = {name: events.column(name).to_numpy(zero_copy_only=False)
                  for name in rf.spec.event_inputs}  # fmt: skip
    req = rf.compute({**event_cols, **online})

    step("labels")
    ecom = req["channel"] == vocab["channel"].index("ecom")
    hour = req["hour_of_day"]
    ratio = np.nan_to_num(req["amount_to_avg"], nan=1.0)
    foreign = np.nan_to_num(req["is_foreign"])
    cross = np.nan_to_num(req["is_cross_border"])
    score = (
        1.5 * (velocity["velocity_count_10m"] >= 2)
        + 0.7 * np.log1p(velocity["velocity_count_1h"])
        + 1.3 * foreign * (ratio > 3.0)
        + 0.8 * np.clip(np.log(np.maximum(ratio, 1e-3)), -1.0, 3.0)
        + 22.0 * online["merchant_fraud_rate_90d"]
        + 0.9 * ecom * (online["account_age_days"] < 90)
        + 0.5 * ((hour >= 0) & (hour < 5))
        + 0.5 * (online["chargeback_count"] > 0)
        + 0.6 * online["merchant_is_high_risk"] * cross
        - 0.4 * online["is_premium"]
    )
    b0 = _calibrate_intercept(score, fraud_rate)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-(b0 + score)))).astype(np.float64)

    model_features = [ref.split(":", 1)[1] for ref in _model_refs("fraud")]
    feats = {name: online[name] for name in model_features} | req
    spec = request_spec("fraud")
    training = _training_table(
        {"event_id": events.column("event_id"), "card_id": events.column("card_id"),
         "merchant_id": events.column("merchant_id"), "event_time": events.column("event_time")},
        feats, label,
    )  # fmt: skip
    meta = {
        "label": "label",
        "features": list(feats),
        "categorical": ["home_country", "merchant_category", "merchant_country",
                        *spec.categorical],
        "objective": "binary",
    }  # fmt: skip
    events = events.append_column("label", pa.array(label))
    tables: Tables = {
        "card_history": (card_history, None), "merchant_risk": (merchant_risk, None),
        "card_velocity": (card_velocity, None), "events": (events, None),
        "training": (training, meta),
    }  # fmt: skip
    return tables, float(label.mean())


def _lookup(values: list[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


def _model_refs(pipeline: str) -> list[str]:
    from features.repo import feature_refs

    return feature_refs(pipeline)


# -- pricing -------------------------------------------------------------------------


def _pricing(
    gen: _Gen, vocab: dict[str, list[str]], n_skus: int, n_stores: int, n_rows: int, step: Step
) -> tuple[Tables, float]:
    rng = gen.rng
    cats = vocab["sku_category"]
    regions = vocab["store_region"]

    step("skus")
    sku_ids = np.arange(n_skus, dtype=np.int64) + SKU_ID_BASE
    cat = rng.choice(len(cats), n_skus)
    info = np.array([_SKU_CATEGORIES[c] for c in cats])
    list_price = np.round(info[cat, 0] * rng.lognormal(0.0, 0.5, n_skus), 2).clip(0.5)
    elasticity = np.clip(info[cat, 1] + rng.normal(0.0, 0.3, n_skus), -4.0, -0.3)
    daily = rng.lognormal(1.5, 1.0, n_skus)  # units per day at list price, chain-wide
    promo = rng.random(n_skus) < 0.1
    sold28 = rng.poisson(daily * 28).astype(np.int64)
    sold7 = rng.binomial(sold28, 0.25).astype(np.int64)
    sold1 = rng.binomial(sold7, 1 / 7).astype(np.int32)
    stock = rng.poisson(daily * rng.uniform(2.0, 20.0, n_skus)).astype(np.int32)
    sku_demand = _view_table(
        {"sku_id": sku_ids},
        {
            "units_sold_1d": sold1, "units_sold_7d": sold7, "units_sold_28d": sold28,
            "elasticity": elasticity, "stock_level": stock,
            "list_price": list_price.astype(np.float32),
            "sku_category": _codes_to_str(cat, cats), "on_promotion": promo,
        },
        {
            "sku_id": pa.int64(), "units_sold_1d": pa.int32(), "units_sold_7d": pa.int64(),
            "units_sold_28d": pa.int64(), "elasticity": pa.float64(), "stock_level": pa.int32(),
            "list_price": pa.float32(), "sku_category": pa.string(), "on_promotion": pa.bool_(),
        },
        gen.snapshot_times(n_skus),
    )  # fmt: skip

    step("competitors + stores")
    has_comp = rng.random(n_skus) >= 0.05  # 5% of SKUs have no competitor data at all
    comp_mean = list_price * rng.lognormal(0.0, 0.08, n_skus)
    comp_min = comp_mean * rng.uniform(0.85, 0.98, n_skus)
    comp_n = rng.integers(1, 9, n_skus).astype(np.int32)
    comp_idx = np.flatnonzero(has_comp)
    comp_ts = gen.snapshot_times(len(comp_idx))
    competitor_prices = _view_table(
        {"sku_id": sku_ids[comp_idx]},
        {"comp_price_min": comp_min[comp_idx],
         "comp_price_mean": comp_mean[comp_idx].astype(np.float32),
         "comp_count": comp_n[comp_idx]},
        {"sku_id": pa.int64(), "comp_price_min": pa.float64(), "comp_price_mean": pa.float32(),
         "comp_count": pa.int32()},
        comp_ts,
    )
    scraped = comp_ts - rng.uniform(0, 43200.0, len(comp_idx)).round()
    competitor_prices = competitor_prices.append_column("comp_updated_at", _ts(scraped))
    store_ids = np.array([f"s{i:04d}" for i in range(n_stores)], dtype=object)
    region = rng.choice(len(regions), n_stores)
    traffic = rng.lognormal(0.0, 0.4, n_stores).astype(np.float32)
    size = rng.integers(300, 12000, n_stores).astype(np.int32)
    outlet = rng.random(n_stores) < 0.1
    store_profile = _view_table(
        {"store_id": store_ids},
        {"store_region": _codes_to_str(region, regions), "store_traffic_index": traffic,
         "store_size_sqm": size, "store_is_outlet": outlet},
        {"store_id": pa.string(), "store_region": pa.string(), "store_traffic_index": pa.float32(),
         "store_size_sqm": pa.int32(), "store_is_outlet": pa.bool_()},
        gen.snapshot_times(n_stores),
    )  # fmt: skip

    step("events")
    sku_i = rng.choice(n_skus, n_rows, p=daily / daily.sum())
    store_i = rng.choice(n_stores, n_rows, p=traffic / traffic.sum())
    t = np.sort(gen.event_times(n_rows))
    base = np.round(list_price[sku_i] * np.where(outlet[store_i], 0.9, 1.0), 2).clip(0.01)
    cand = np.round(base * np.exp(rng.normal(0.0, 0.12, n_rows)).clip(0.6, 1.5), 2).clip(0.01)
    events = pa.table({
        "event_id": pa.array([f"pr-{i:09d}" for i in range(n_rows)], type=pa.string()),
        "sku_id": pa.array(sku_ids[sku_i]),
        "store_id": pa.array(store_ids[store_i], type=pa.string()),
        "base_price": pa.array(base), "candidate_price": pa.array(cand),
        "event_time": pa.array(t),
    })  # fmt: skip

    step("features")
    nan = np.nan
    online: dict[str, F64] = {
        "units_sold_1d": sold1[sku_i].astype(np.float64),
        "units_sold_7d": sold7[sku_i].astype(np.float64),
        "units_sold_28d": sold28[sku_i].astype(np.float64),
        "elasticity": elasticity[sku_i], "stock_level": stock[sku_i].astype(np.float64),
        "list_price": list_price.astype(np.float32)[sku_i].astype(np.float64),
        "sku_category": encode_strings(_codes_to_str(cat[sku_i], cats), _lookup(cats)),
        "on_promotion": promo[sku_i].astype(np.float64),
        "comp_price_min": np.where(has_comp[sku_i], comp_min[sku_i], nan),
        "comp_price_mean": np.where(has_comp[sku_i], comp_mean.astype(np.float32)[sku_i], nan),
        "comp_count": np.where(has_comp[sku_i], comp_n[sku_i], nan),
        "store_region": encode_strings(_codes_to_str(region[store_i], regions), _lookup(regions)),
        "store_traffic_index": traffic[store_i].astype(np.float64),
        "store_size_sqm": size[store_i].astype(np.float64),
        "store_is_outlet": outlet[store_i].astype(np.float64),
    }  # fmt: skip
    rf = RequestFeatures("pricing", vocab)
    req = rf.compute({**{n: events.column(n).to_numpy() for n in rf.spec.event_inputs}, **online})

    step("labels")
    hour, dow = req["hour_of_day"], req["day_of_week"]
    season = (1.0 + 0.35 * np.sin((hour - 11.0) / 24.0 * 2 * np.pi)) * np.where(dow >= 5, 1.3, 1.0)
    comp_pressure = np.where(
        np.isnan(req["price_vs_comp_min"]), 1.0, np.clip(req["price_vs_comp_min"], 0.5, 2.0) ** -1.5
    )
    mu = (
        daily[sku_i] / 4.0 * traffic[store_i].astype(np.float64) * season
        * req["price_ratio"] ** elasticity[sku_i] * comp_pressure
        * np.where(promo[sku_i], 1.4, 1.0)
    )  # fmt: skip
    label = np.minimum(rng.poisson(mu), np.maximum(stock[sku_i], 0)).astype(np.float64)

    model_features = [ref.split(":", 1)[1] for ref in _model_refs("pricing")]
    feats = {name: online[name] for name in model_features} | req
    training = _training_table(
        {"event_id": events.column("event_id"), "sku_id": events.column("sku_id"),
         "store_id": events.column("store_id"), "event_time": events.column("event_time")},
        feats, label,
    )  # fmt: skip
    meta = {
        "label": "label",
        "features": list(feats),
        "categorical": ["sku_category", "store_region", *request_spec("pricing").categorical],
        "objective": "regression",
    }
    tables: Tables = {
        "sku_demand": (sku_demand, None), "competitor_prices": (competitor_prices, None),
        "store_profile": (store_profile, None), "events": (events, None),
        "training": (training, meta),
    }  # fmt: skip
    return tables, float(label.mean())
