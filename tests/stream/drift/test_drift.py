"""Drift monitor: binning and statistics against scipy/numpy oracles, calibration of the
alarms on stationary streams, detection of injected shifts, windows, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from scipy.spatial.distance import jensenshannon
from scipy.stats import binom, chi2, entropy, ks_2samp, wasserstein_distance

from schemas.drift import (
    DecisionMix,
    DriftRecord,
    DriftRecordEncoder,
    FeatureDrift,
    decode_drift,
    drift_json_schema,
    encode_drift,
)
from scorers.refstats import bin_counts, categorical_codes, reference_stats
from stream.config import DriftConfig
from stream.drift import stats as drift_stats
from stream.drift.monitor import SCORE_LABEL, DriftMonitor
from stream.drift.stats import LUT_MAX_CODE, accumulate, build_layout, page_hinkley
from stream.drift.window import PSEUDO_COUNT, psi_level, window_stats

ROOT = Path(__file__).resolve().parents[3]
N_NUM, N_CAT = 8, 2
NAMES = [f"f{i}" for i in range(N_NUM)] + ["country", "channel"]
CAT_P = {"country": [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005],
         "channel": [0.6, 0.3, 0.1]}
M = 100_000
MISSING_F0 = 0.03


def draw(rng, k, *, shift=None, cat_p=None, missing_f0=MISSING_F0):
    """k rows of the synthetic training distribution (optionally drifted)."""
    X = rng.normal(size=(k, len(NAMES)))
    for name, p in {**CAT_P, **(cat_p or {})}.items():
        X[:, NAMES.index(name)] = rng.choice(len(p), k, p=p)
    if shift:
        X[:, NAMES.index(shift[0])] += shift[1]
    X[rng.random(k) < missing_f0, 0] = np.nan
    return X


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(20261128)
    return reference_stats(draw(rng, M), NAMES, rng.beta(0.5, 5, M),
                           categorical=["country", "channel"])


class Decoded:
    """A monitor whose records come back decoded (``DriftRecord``), after checking that
    its bytes are exactly the Struct's encoding of that record."""

    def __init__(self, mon):
        self.mon = mon

    @staticmethod
    def _decode(records):
        out = []
        for data in records:
            assert type(data) is bytes
            record = decode_drift(data)
            assert encode_drift(record) == data  # byte for byte
            out.append(record)
        return out

    def update(self, *args, **kw):
        return self._decode(self.mon.update(*args, **kw))

    def tick(self, *args, **kw):
        return self._decode(self.mon.tick(*args, **kw))

    def flush(self, *args, **kw):
        return self._decode(self.mon.flush(*args, **kw))

    def __getattr__(self, name):
        return getattr(self.mon, name)


def monitor(reference, registry=None, **cfg):
    config = DriftConfig(**{"window_events": 1000, "window_seconds": 0, "sub_windows": 1,
                            **cfg})
    info = {"name": "fraud", "version": 3, "sha256": "ab" * 32}
    return Decoded(DriftMonitor(reference, NAMES, config, "fraud", info, registry=registry))


def feed(mon, rng, events, batch=512, **kw):
    records, t = [], 0.0
    for start in range(0, events, batch):
        k = min(batch, events - start)
        t += 0.01
        records += mon.update(draw(rng, k, **kw), rng.beta(0.5, 5, k), None, now=t)
    return records


def oracle_counts(reference, X, scores):
    """Flat bin counts built with scorers.refstats (the reference's own binning rule)."""
    blocks = []
    for j, name in enumerate(NAMES):
        entry = reference["features"][name]
        if entry["kind"] == "numeric":
            counts, missing = bin_counts(X[:, j], entry["edges"])
            blocks.append([*counts.tolist(), missing])
        else:
            codes = categorical_codes(X[:, j])
            cats = entry["categories"]
            known = [int(np.sum(codes == c)) for c in cats]
            missing = int(np.sum(codes < 0))
            blocks.append([*known, len(codes) - missing - sum(known), missing])
    counts, _ = bin_counts(scores, reference["score"]["edges"])
    blocks.append([*counts.tolist(), 0])
    return np.concatenate([np.asarray(b, dtype=np.int64) for b in blocks])


def test_binning_matches_the_reference_rule(reference):
    rng = np.random.default_rng(1)
    X = draw(rng, 3000)
    f1 = reference["features"]["f1"]["edges"]
    X[:5, 1] = [-np.inf, np.inf, f1[0], f1[3], f1[-1]]  # edges and infinities
    X[:6, 8] = [np.nan, -1.0, 2.7, 1e12, 99.0, np.inf]  # missing, truncation, other
    s = rng.beta(0.5, 5, 3000)
    lay = build_layout([(n, reference["features"][n]) for n in NAMES]
                       + [(SCORE_LABEL, reference["score"])])
    counts = np.zeros(lay.total_bins, dtype=np.int64)
    accumulate(lay, X, counts, 0, 1000, scores=s)
    accumulate(lay, np.column_stack([X, s]), counts, 1000, 3000)
    np.testing.assert_array_equal(counts, oracle_counts(reference, X, s))
    with pytest.raises(ValueError, match="does not fit"):
        accumulate(lay, X[:, :3], counts, scores=s)
    with pytest.raises(ValueError, match="does not fit"):
        accumulate(lay, X, counts, 0, 3000, scores=s[:10])


def test_statistics_equal_scipy_on_the_same_bins(reference):
    rng = np.random.default_rng(2)
    X = draw(rng, 700, shift=("f2", 0.3))
    X[:40, 9] = 7  # a channel code unseen in training: the reference's "other" bin is empty
    s = rng.beta(0.6, 5, 700)
    counts = oracle_counts(reference, X, s)
    lay = build_layout([(n, reference["features"][n]) for n in NAMES]
                       + [(SCORE_LABEL, reference["score"])])
    alpha = 0.01
    st = window_stats(lay, counts, alpha)
    for j, name in enumerate([*NAMES, SCORE_LABEL]):
        w = counts[lay.offset[j] : lay.offset[j + 1]].astype(float)
        r = lay.ref_counts[lay.offset[j] : lay.offset[j + 1]]
        active = (w > 0) | (r > 0)
        a = (w[active] + PSEUDO_COUNT) / (w[active] + PSEUDO_COUNT).sum()
        e = (r[active] + PSEUDO_COUNT) / (r[active] + PSEUDO_COUNT).sum()
        assert st.psi[j] == pytest.approx(entropy(a, e) + entropy(e, a), abs=1e-9)
        assert st.js[j] == pytest.approx(jensenshannon(w / w.sum(), r / r.sum()), abs=1e-9)
        k = int(np.count_nonzero(r)) - 1
        expected = (1 / 700 + 1 / M) * chi2.ppf(1 - alpha, k)
        assert st.threshold[j] == pytest.approx(expected, rel=1e-12)
        assert st.missing_rate[j] == pytest.approx(w[-1] / 700, abs=1e-12)
        assert st.reference_missing_rate[j] == pytest.approx(r[-1] / M, abs=1e-12)
        entry = reference["features"].get(name, {"kind": "numeric", **reference["score"]})
        if entry["kind"] == "categorical":
            assert np.isnan(st.ks[j]) and np.isnan(st.wasserstein[j])
            continue
        # KS of the two samples of bin indices is exactly the binned KS statistic.
        bins = np.arange(len(w) - 1)
        ks = ks_2samp(np.repeat(bins, w[:-1].astype(int)), np.repeat(bins, r[:-1].astype(int)))
        assert st.ks[j] == pytest.approx(ks.statistic, abs=1e-9)
        edges = np.asarray(entry["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        ws = wasserstein_distance(centres, centres, w[:-1], r[:-1])
        assert st.wasserstein[j] == pytest.approx(ws, abs=1e-9)
    assert st.psi[NAMES.index("channel")] > st.threshold[NAMES.index("channel")]


@pytest.mark.parametrize("window", [200, 1000])
def test_stationary_alarm_rate_is_calibrated(reference, window):
    rng = np.random.default_rng(window)
    alpha = 0.01
    mon = monitor(reference, window_events=window, false_alarm_rate=alpha)
    records = feed(mon, rng, 150_000 if window == 1000 else 60_000, batch=5000)
    alarms = np.array([[f.alarm for f in r.features] + [r.score.alarm] for r in records])
    trials, hits = alarms.size, int(alarms.sum())
    assert trials >= 200 * 5
    # Two-sided binomial tolerance at 1e-3: a calibrated test lands inside it.
    lo, hi = binom.ppf(0.0005, trials, alpha), binom.isf(0.0005, trials, alpha)
    assert lo <= hits <= hi, f"{hits} alarms in {trials} feature-windows, expected {lo}..{hi}"
    # The conventional fixed 0.1 rule would alarm at another rate on other window sizes.
    assert all(r.n == window for r in records)


def _first_alarm(records, name):
    for i, r in enumerate(records):
        if name in r.alarms:
            return i
    return None


def test_half_sigma_mean_shift_flagged_within_5000_events_and_nothing_else(reference):
    rng = np.random.default_rng(3)
    # Default windows (5000 events in 5 sliding sub-windows). The false-alarm rate is
    # 0.001 so that "no other feature flagged" is a claim about calibration, not luck:
    # 11 other statistics x 5 windows x 0.001 leaves a ~5% chance of a stray alarm.
    mon = monitor(reference, window_events=5000, sub_windows=5, false_alarm_rate=0.001)
    records = feed(mon, rng, 5000, shift=("f3", 0.5))
    assert len(records) == 5 and records[-1].n == 5000
    first = _first_alarm(records, "f3")
    assert first is not None and (first + 1) * 1000 <= 5000
    assert all(set(r.alarms) <= {"f3"} for r in records), [r.alarms for r in records]
    f3 = records[-1].features[3]
    assert f3.psi > f3.threshold and f3.wasserstein > 0.3
    # With the default rate the shift is found in the first 1000-event sub-window too.
    mon = monitor(reference, window_events=5000, sub_windows=5)
    assert "f3" in feed(mon, rng, 1000, shift=("f3", 0.5))[0].alarms


def test_category_frequency_shift_flagged(reference):
    rng = np.random.default_rng(4)
    mon = monitor(reference, window_events=5000, sub_windows=5, false_alarm_rate=0.001)
    shifted = {"country": [0.3, 0.25, 0.15, 0.2, 0.05, 0.03, 0.015, 0.005]}
    records = feed(mon, rng, 5000, cat_p=shifted)
    assert _first_alarm(records, "country") is not None
    assert all(set(r.alarms) <= {"country"} for r in records)
    assert records[-1].features[NAMES.index("country")].kind == "categorical"


def test_missing_rate_rise_flagged(reference):
    rng = np.random.default_rng(5)
    mon = monitor(reference, window_events=5000, sub_windows=5, false_alarm_rate=0.001)
    records = feed(mon, rng, 5000, missing_f0=0.08)
    assert _first_alarm(records, "f0") is not None
    assert all(set(r.alarms) <= {"f0"} for r in records)
    f0 = records[-1].features[0]
    assert f0.reference_missing_rate == pytest.approx(MISSING_F0, abs=0.003)
    assert f0.missing_rate == pytest.approx(0.08, abs=0.012)


def test_sliding_windows_equal_direct_computation(reference):
    rng = np.random.default_rng(6)
    mon = monitor(reference, window_events=5000, sub_windows=5)
    X, s = draw(rng, 12_000), rng.beta(0.5, 5, 12_000)
    records, start = [], 0
    for size in rng.integers(1, 1500, size=40):  # batches straddle sub-window boundaries
        if start >= len(s):
            break
        stop = min(start + int(size), len(s))
        records += mon.update(X[start:stop], s[start:stop], now=float(stop))
        start = stop
    assert [r.n for r in records] == [1000, 2000, 3000, 4000] + [5000] * 8
    lay = mon.layout
    for i, r in enumerate(records):
        end = (i + 1) * 1000
        begin = max(0, end - 5000)
        direct = window_stats(lay, oracle_counts(reference, X[begin:end], s[begin:end]), 0.01)
        got = [f.psi for f in r.features] + [r.score.psi]
        np.testing.assert_allclose(got, direct.psi, rtol=0, atol=1e-12)


def test_time_windows_close_and_expire(reference):
    rng = np.random.default_rng(7)
    mon = monitor(reference, window_events=0, window_seconds=10, sub_windows=2)
    assert mon.update(draw(rng, 100), rng.random(100), now=0.0) == []
    assert mon.update(draw(rng, 100), rng.random(100), now=4.0) == []
    (r1,) = mon.update(draw(rng, 50), rng.random(50), now=5.0)
    assert (r1.n, r1.closed_by, r1.window_start, r1.window_end) == (200, "time", 0.0, 5.0)
    (r2,) = mon.update(np.empty((0, len(NAMES))), np.empty(0), now=10.5)  # an empty batch
    assert (r2.n, r2.window_start) == (250, 0.0)
    assert mon.update(draw(rng, 10), rng.random(10), now=11.0) == []
    (r2b,) = mon.tick(now=16.0)  # no batch arrived: the clock alone closes the sub-window
    assert (r2b.n, r2b.window_start, r2b.closed_by) == (60, 5.0, "time")
    # After a long gap the old sub-windows expire: the next window holds only new data.
    assert mon.update(draw(rng, 30), rng.random(30), now=100.0) == []
    assert mon.events_in_window == 30
    (r3,) = mon.flush(now=101.0)
    assert (r3.n, r3.closed_by, r3.window_start) == (30, "flush", 100.0)
    assert mon.flush(now=102.0) == []


def test_decision_mix_codes_labels_and_multipliers(reference):
    rng = np.random.default_rng(8)
    mon = monitor(reference, window_events=10)
    codes = np.array([0, 0, 0, 0, 0, 1, 1, 2, 0, 0], dtype=np.int8)
    (r,) = mon.update(draw(rng, 10), rng.random(10), codes, now=1.0)
    assert r.decisions.counts == {"approve": 7, "review": 2, "decline": 1}
    assert r.decisions.shares["approve"] == pytest.approx(0.7)
    (r,) = mon.update(draw(rng, 10), rng.random(10), ["review"] * 9 + ["odd"], now=2.0)
    assert r.decisions.counts == {"approve": 0, "review": 9, "decline": 0, "other": 1}
    labels = np.array(["decline"] * 4 + ["approve"] * 6)
    (r,) = mon.update(draw(rng, 10), rng.random(10), labels, now=2.5)
    assert r.decisions.counts == {"approve": 6, "review": 0, "decline": 4}
    mult = np.array([1.0, 1.1, 0.9, 1.05, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0])
    (r,) = mon.update(draw(rng, 10), rng.random(10), mult, now=3.0)
    assert r.decisions.mean_multiplier == pytest.approx(np.nanmean(mult))


def test_page_hinkley_quiet_when_stationary_and_fires_on_score_shift(reference):
    rng = np.random.default_rng(9)
    state = np.zeros(6)
    assert page_hinkley(rng.normal(size=200_000), state, 0.1, 100.0) == 0
    mon = monitor(reference, window_events=2000)
    for _ in range(5):
        (r,) = mon.update(draw(rng, 2000), rng.beta(0.5, 5, 2000), now=1.0)
        assert r.page_hinkley_alarms == 0
    (r,) = mon.update(draw(rng, 2000), rng.beta(0.5, 5, 2000) + 0.1, now=2.0)  # ~0.9 sigma
    assert r.page_hinkley_alarms >= 1 and "page_hinkley" in r.alarms
    assert "score" in r.alarms


def test_prometheus_gauges_and_reuse_of_a_registry(reference):
    rng = np.random.default_rng(10)
    registry = CollectorRegistry()
    mon = monitor(reference, registry=registry)
    (r,) = feed(mon, rng, 1000, shift=("f1", 1.0))
    labels = {"pipeline": "fraud", "feature": "f1"}
    assert registry.get_sample_value("streamscore_drift_psi", labels) == r.features[1].psi
    assert registry.get_sample_value("streamscore_drift_threshold", labels) == pytest.approx(
        r.features[1].threshold)
    assert registry.get_sample_value("streamscore_drift_alarm", labels) == 1.0
    assert registry.get_sample_value("streamscore_drift_alarms_total", labels) == 1.0
    assert registry.get_sample_value(
        "streamscore_drift_psi", {"pipeline": "fraud", "feature": SCORE_LABEL}) == r.score.psi
    assert registry.get_sample_value("streamscore_drift_window_events",
                                     {"pipeline": "fraud"}) == 1000
    text = generate_latest(registry).decode()
    assert 'streamscore_drift_alarm{feature="f1",pipeline="fraud"} 1.0' in text
    assert 'streamscore_drift_decision_share' in text
    # A second monitor (model reload) on the same registry reuses the metric families.
    again = monitor(reference, registry=registry)
    feed(again, rng, 1000)
    assert registry.get_sample_value("streamscore_drift_windows_total",
                                     {"pipeline": "fraud"}) == 2.0


def test_record_round_trip_and_json_schema_file(reference):
    rng = np.random.default_rng(11)
    (r,) = feed(monitor(reference), rng, 1000)
    assert (r.model_name, r.model_version, r.model_sha256) == ("fraud", "3", "ab" * 32)
    assert decode_drift(encode_drift(r)) == r
    on_disk = json.loads((ROOT / "schemas/jsonschema/drift_record.json").read_text())
    for key in ("$schema", "title"):
        on_disk.pop(key)
    assert on_disk == json.loads(json.dumps(drift_json_schema()))


def test_bad_inputs_are_clear_errors(reference):
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unusable: reference\.score"):
        DriftMonitor({**reference, "score": {"edges": [0.0], "counts": [1]}}, NAMES,
                     DriftConfig(), "p", registry=None)
    with pytest.raises(ConfigError, match="no statistics for features"):
        DriftMonitor(reference, [*NAMES, "nope"], DriftConfig(), "p", registry=None)
    with pytest.raises(ConfigError, match="false_alarm_rate"):
        monitor(reference, false_alarm_rate=0.0)
    mon = monitor(reference)
    with pytest.raises(ValueError, match="expected"):
        mon.update(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="scores for"):
        mon.update(np.zeros((3, len(NAMES))), np.zeros(2))
    with pytest.raises(ValueError, match="decisions for"):
        mon.update(np.zeros((3, len(NAMES))), np.zeros(3), np.zeros(2, dtype=np.int64))
    # A bad batch leaves the monitor usable, and nothing of it counted.
    assert mon.events_in_window == 0
    mon.update(np.zeros((3, len(NAMES))), np.zeros(3), np.zeros(3, dtype=np.int64))
    assert mon.events_in_window == 3


def test_binning_without_lookup_tables_and_blocks_of_any_size(reference, monkeypatch):
    """Categorical codes above the lookup-table limit take the binary search; batches
    of sizes around the kernel's row block give the oracle's counts."""
    rng = np.random.default_rng(5)
    X = draw(rng, 1000)
    X[:8, 8] = [np.nan, -1.0, 2.7, 1e12, 99.0, np.inf, -0.5, 4.7e18]
    s = rng.beta(0.5, 5, 1000)
    entries = [(n, reference["features"][n]) for n in NAMES] + [(SCORE_LABEL, reference["score"])]
    expected = oracle_counts(reference, X, s)
    for limit in (LUT_MAX_CODE, 0):
        monkeypatch.setattr(drift_stats, "LUT_MAX_CODE", limit)
        lay = build_layout(entries)
        assert (lay.kernel_args[0][-3:-1, 7] >= 0).all() == (limit > 0)  # the two categoricals
        counts = np.zeros(lay.total_bins, dtype=np.int64)
        r = 0
        for size in (1, 63, 64, 65, 127, 128, 552):  # sums to 1000
            accumulate(lay, X, counts, r, r + size, scores=s)
            r += size
        np.testing.assert_array_equal(counts, expected)


def test_default_registry_is_the_global_one(reference, unique_name):
    rng = np.random.default_rng(12)
    config = DriftConfig(window_events=500, window_seconds=0, sub_windows=1)
    mon = Decoded(DriftMonitor(reference, NAMES, config, unique_name))
    (r,) = mon.update(draw(rng, 500), rng.random(500), now=1.0)
    labels = {"pipeline": unique_name, "feature": "f0"}
    assert REGISTRY.get_sample_value("streamscore_drift_psi", labels) == r.features[0].psi


def _struct_record(names, kinds, bins, cols, **fields):
    """The record as the Struct path writes it: a FeatureDrift per feature."""
    feats = [
        FeatureDrift(name=n, kind=k, psi=p, threshold=t, alarm=p > t,
                     level=psi_level(p), js=j, ks=None if ks != ks else ks,
                     wasserstein=None if w != w else w, missing_rate=m,
                     reference_missing_rate=rm, bins=b)
        for n, k, b, p, t, j, ks, w, m, rm in zip(names, kinds, bins, *cols, strict=True)]
    alarms = [f.name for f in feats[:-1] if f.alarm] + ["score"] * feats[-1].alarm
    if fields.get("page_hinkley_alarms"):
        alarms.append("page_hinkley")
    return DriftRecord(features=feats[:-1], score=feats[-1], alarms=alarms, **fields)


@pytest.mark.parametrize("case", ["plain", "nan_ks", "alarms", "pricing", "empty_mix"])
def test_column_encoder_writes_the_struct_encoding_byte_for_byte(case):
    """DriftRecordEncoder == encode_drift(DriftRecord(...)) on the same numbers: null
    KS/Wasserstein, alarms on features and score, Page-Hinkley, level boundaries, a
    price multiplier, no decisions, names that need escaping."""
    rng = np.random.default_rng(13)
    names = ['amount', 'h"our', "pa\u00efs", "x\\y", "%s", "score"]
    kinds = ["numeric", "numeric", "categorical", "numeric", "numeric", "score"]
    bins = [11, 7, 4, 2, 1, 21]
    f = len(names)
    psi = rng.random(f) * 0.02  # below the thresholds
    thr = np.full(f, 0.03)
    js, ks, w = rng.random(f), rng.random(f), rng.random(f) * 3
    miss, ref_miss = rng.random(f) * 0.1, rng.random(f) * 0.1
    ks[2] = w[2] = np.nan  # categorical: not defined
    mix = DecisionMix(counts={"approve": 3, "review": 1, "decline": 0},
                      shares={"approve": 0.75, "review": 0.25, "decline": 0.0})
    ph = 0
    if case == "nan_ks":
        ks[:] = np.nan
        w[:] = np.nan
    if case == "alarms":
        psi[[0, 3, 4, 5]] = [0.1, 0.25, 0.05, 3.0]  # level boundaries, score alarm
        thr[3] = 0.25  # psi == threshold: no alarm
        ph = 2
    if case == "pricing":
        mix = DecisionMix(mean_multiplier=1.0374999999999999)
    if case == "empty_mix":
        mix = DecisionMix()
    cols = [c.tolist() for c in (psi, thr, js, ks, w, miss, ref_miss)]
    fields = {"pipeline": "fr\u00e4ud \"x\"", "model_name": "m", "model_version": "7",
              "model_sha256": "ab" * 32, "window_start": 1_790_000_000.125,
              "window_end": 1_790_000_060.5, "closed_by": "count", "n": 5000,
              "reference_n": 100_000, "false_alarm_rate": 0.01, "decisions": mix,
              "page_hinkley_alarms": ph}
    expected = _struct_record(names, kinds, bins, cols, **fields)
    enc = DriftRecordEncoder(
        pipeline=fields["pipeline"], model_name="m", model_version="7",
        model_sha256="ab" * 32, reference_n=100_000, false_alarm_rate=0.01, names=names,
        kinds=kinds, bins=bins)
    data, alarms = enc.encode(
        window_start=fields["window_start"], window_end=fields["window_end"],
        closed_by="count", n=5000, psi=cols[0], threshold=cols[1], js=cols[2], ks=cols[3],
        wasserstein=cols[4], missing_rate=cols[5], reference_missing_rate=cols[6],
        decisions=mix, page_hinkley_alarms=ph)
    assert data == encode_drift(expected)
    assert decode_drift(data) == expected and alarms == expected.alarms
    if case == "alarms":
        assert alarms == ["amount", "%s", "score", "page_hinkley"]
        assert [x.level for x in expected.features[:4]] == [
            "moderate", "stable", "stable", "significant"]


def test_other_input_types_are_converted_to_the_same_records(reference):
    """The step kernel is compiled for float64 C arrays and int8/int64 codes only; a
    read-only, Fortran-ordered or float32 batch, 2-D scores, strided or boolean codes go
    through one conversion and give the records of the plain call."""
    rng = np.random.default_rng(14)
    X = draw(rng, 1200)
    s = rng.beta(0.5, 5, 1200)
    codes = rng.integers(0, 3, 1200).astype(np.int8)
    expected = monitor(reference).update(X, s, codes, now=1.0)
    assert len(expected) == 1
    ro = X.copy()
    ro.flags.writeable = False
    variants = [
        (ro, s, codes),
        (np.asfortranarray(X), s, codes),
        (X.astype(np.float32).astype(np.float64), s, codes),  # the same values
        (X, s[:, None], codes),  # rows x 1 scores
        (X, np.column_stack([s, s * 0.5]), codes),  # rows x classes: the top class
        (X, s, np.repeat(codes, 2)[::2]),  # strided codes
        (X, s, codes.astype(np.int64)),
        (X.tolist(), s.tolist(), codes.tolist()),
    ]
    for i, (x, sc, d) in enumerate(variants):
        got = monitor(reference).update(x, sc, d, now=1.0)
        assert got == expected, i
    bools = monitor(reference).update(X, s, codes == 1, now=1.0)[0].decisions.counts
    first = codes[:1000] == 1  # the window holds the first 1,000 events
    assert bools == {"approve": int((~first).sum()), "review": int(first.sum()), "decline": 0}


def test_the_workers_arrays_take_the_compiled_path_without_conversion(reference, monkeypatch):
    """The worker's feature matrix is a column selection (Fortran-ordered), its codes
    int8: they go straight to the kernel (a conversion copies; numba's TypeError path
    costs ~300 us a batch), other types are converted."""
    rng = np.random.default_rng(16)
    mon = monitor(reference).mon
    X = draw(rng, 600)[:, list(range(len(NAMES)))]  # as pool[:, plan]
    assert not X.flags.c_contiguous
    calls = []
    original = mon._convert
    monkeypatch.setattr(mon, "_convert", lambda *a: calls.append(1) or original(*a))
    mon.update(X, rng.random(600), rng.integers(0, 3, 600).astype(np.int8), now=1.0)
    mon.update(np.ascontiguousarray(X), rng.random(600), None, now=2.0)
    assert calls == []
    mon.update(X.astype(np.float32), rng.random(600), None, now=3.0)
    assert calls == [1]
