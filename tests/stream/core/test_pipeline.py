"""The Kafka-free batch core: one decision per good payload, one dead letter per bad one."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
import pytest

from features.repo import load_vocab, repo_path
from features.request import RequestFeatures
from schemas.registry import decoder_for
from scorers import compile_lightgbm
from stream.config import PipelineConfig
from stream.core.pipeline import BatchCore, DeadLetterFlood, DlqGuard, LoadedModel

NOW = 1_795_000_000.0
FRAUD_FEATURES = ["amount_usd", "channel", "country", "hour_of_day", "mcc"]
PRICING_FEATURES = ["price_ratio", "hour_of_day", "base_price"]


def bands(blocked=("KP",), max_amount=5000.0, fallback=300.0, **over) -> dict:
    """The fraud example's policy: blocked countries, an amount limit, a fallback limit."""
    return {"kind": "bands", "review_above": 0.3, "decline_above": 0.7,
            "rules": [{"name": "blocked_country", "field": "country", "in": list(blocked),
                       "outcome": "decline"},
                      {"name": "amount_over_limit", "field": "amount_usd",
                       "above": max_amount, "outcome": "review"}],
            "fallback": {"name": "fallback_amount", "field": "amount_usd", "above": fallback},
            **over}


def sweep(candidates=(0.9, 1.0, 1.1)) -> dict:
    return {"kind": "sweep", "base_field": "base_price", "candidate_field": "candidate_price",
            "candidates": list(candidates)}


def config(kind: str, **over) -> PipelineConfig:
    raw = {
        "name": kind, "schema": "fraud_transaction" if kind == "fraud" else "pricing_request",
        "event": {"key": "card_id" if kind == "fraud" else "sku_id"},
        "kafka": {}, "topics": {"input": "i", "decisions": "d", "dead_letter": "x", "drift": "y"},
        "features": {"repo": f"features/repos/{kind}", "request": kind},
        "model": {"ref": f"{kind}@champion"},
        "policy": bands() if kind == "fraud" else sweep(),
        "budget_ms": 100,
        **over,
    }
    return msgspec.convert(raw, PipelineConfig)


def with_config(cfg: PipelineConfig, **over) -> PipelineConfig:
    """``cfg`` with top-level sections replaced."""
    return msgspec.convert({**msgspec.to_builtins(cfg), **over}, PipelineConfig)


class BoosterScorer:
    """The reference library behind the scorer protocol (gives contributions too)."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.feature_names = booster.feature_name()

    def predict(self, X, raw_score=False):
        return self.booster.predict(X, raw_score=raw_score)

    def contributions(self, X):
        return self.booster.predict(X, pred_contrib=True)


def fraud_event(i: int, **over) -> dict:
    rng = np.random.default_rng(i)
    doc = {"event_id": f"e{i}", "card_id": int(rng.integers(1, 50)), "merchant_id": "m1",
           "amount": float(rng.uniform(1, 900)), "currency": "USD",
           "country": ["US", "DE", "FR"][i % 3], "channel": ["pos", "ecom"][i % 2],
           "mcc": 5411, "event_time": NOW - 0.01}
    return {**doc, **over}


@pytest.fixture(scope="module")
def fraud_booster() -> lgb.Booster:
    return train_fraud_booster()


def train_fraud_booster() -> lgb.Booster:
    """A small fraud model over request features only (amount in USD drives it)."""
    rng = np.random.default_rng(0)
    n = 3000
    request = RequestFeatures("fraud", load_vocab(repo_path("fraud")))
    cols = {"amount": rng.uniform(1, 900, n), "currency": np.array(["USD"] * n, object),
            "country": rng.choice(np.array(["US", "DE", "FR"], object), n),
            "channel": rng.choice(np.array(["pos", "ecom"], object), n),
            "mcc": np.full(n, 5411.0), "event_time": NOW + rng.uniform(0, 86400, n),
            "avg_amount_30d": np.full(n, np.nan), "std_amount_30d": np.full(n, np.nan),
            "home_country": np.full(n, np.nan), "merchant_country": np.full(n, np.nan)}
    out = request.compute(cols)
    X = np.column_stack([out[f] for f in FRAUD_FEATURES])
    y = ((cols["amount"] > 450) ^ (rng.random(n) < 0.05)).astype(float)
    data = lgb.Dataset(X, y, feature_name=FRAUD_FEATURES)
    return lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, data, 30)


def fraud_core(booster, **kw) -> BatchCore:
    cfg = kw.pop("cfg", None) or config("fraud")
    scorer = kw.pop("scorer", None) or BoosterScorer(booster)
    model = LoadedModel("fraud", "1", "ab" * 32, scorer)
    request = RequestFeatures("fraud", load_vocab(repo_path("fraud")))
    return BatchCore(cfg, model, request=request, worker_id="w1", **kw)


def test_every_payload_gives_exactly_one_record(fraud_booster):
    core = fraud_core(fraud_booster)
    good = [json.dumps(fraud_event(i)).encode() for i in range(40)]
    bad = [b"{oops", json.dumps(fraud_event(99, amount=-5)).encode(), b""]
    payloads = good[:20] + bad + good[20:]
    sources = [("in", 0, off) for off in range(len(payloads))]
    res = core.process(payloads, sources=sources, keys=[b"k"] * len(payloads), now=NOW)
    assert len(res.decisions) == 40 and len(res.dead_letters) == 3
    decode = decoder_for("decision").decode
    records = [decode(v) for _, v in res.decisions]
    assert sorted(r.event_id for r in records) == sorted(f"e{i}" for i in range(40))
    assert [k for k, _ in res.decisions] == [r.key.encode() for r in records]
    assert {r.source_offset for r in records} == set(range(len(payloads))) - {20, 21, 22}
    dls = [decoder_for("dead_letter").decode(v) for _, v in res.dead_letters]
    assert [(d.offset, d.error_code) for d in dls] == [
        (20, "not_json"), (21, "out_of_range"), (22, "empty")]
    assert dls[0].payload == b"{oops"
    assert res.dead_letter_reasons == {"not_json": 1, "out_of_range": 1, "empty": 1}
    assert sum(res.outcomes.values()) == 40


def test_scores_match_lightgbm_and_bands_follow_policy(fraud_booster):
    core = fraud_core(fraud_booster, scorer=compile_lightgbm(fraud_booster))
    events = [fraud_event(i) for i in range(64)]
    res = core.process([json.dumps(e).encode() for e in events], now=NOW)
    assert res.features is not None
    want = fraud_booster.predict(res.features)
    records = [decoder_for("decision").decode(v) for _, v in res.decisions]
    np.testing.assert_allclose([r.score for r in records], want, rtol=1e-12)
    for r in records:
        band = "decline" if r.score >= 0.7 else "review" if r.score >= 0.3 else "approve"
        assert r.outcome == band and not r.degraded
        assert r.model_sha256 == "ab" * 32 and r.worker_id == "w1"
    assert any(r.outcome == "approve" for r in records)
    assert any(r.outcome != "approve" for r in records)


def test_reason_codes_explain_adverse_decisions(fraud_booster):
    core = fraud_core(fraud_booster)
    core.explain_budget_s = 10.0  # this test is about which rows, not the time allowance
    amounts = [800.0, 10.0, 850.0, 20.0, 900.0]
    res = core.process([json.dumps(fraud_event(i, amount=a)).encode()
                        for i, a in enumerate(amounts)], now=NOW)
    contrib = fraud_booster.predict(res.features, pred_contrib=True)[:, :-1]
    outcomes = [json.loads(v)["outcome"] for _, v in res.decisions]
    assert outcomes.count("approve") == 2
    for j, (_, value) in enumerate(res.decisions):
        reasons = json.loads(value)["reasons"]
        if outcomes[j] == "approve":
            assert reasons == []
            continue
        assert len(reasons) == 3
        top = np.argsort(-contrib[j], kind="stable")[:3]
        assert [r["feature"] for r in reasons] == [FRAUD_FEATURES[t] for t in top]
        assert reasons[0]["contribution"] == pytest.approx(contrib[j, top[0]], abs=1e-6)


def test_old_events_and_hard_rules_are_flagged(fraud_booster):
    core = fraud_core(fraud_booster)
    old = fraud_event(1, amount=350.0, event_time=NOW - 5)
    blocked = fraud_event(2, country="KP", amount=10.0)
    res = core.process([json.dumps(old).encode(), json.dumps(blocked).encode()], now=NOW)
    r_old, r_blocked = (json.loads(v) for _, v in res.decisions)
    assert r_old["degraded"] and r_old["degraded_reasons"] == ["over_budget"]
    assert r_old["rule"] == "fallback_amount" and r_old["outcome"] in ("review", "decline")
    assert r_blocked["outcome"] == "decline" and r_blocked["rule"] == "blocked_country"
    assert res.budget_misses == 1 and res.degraded_reasons == {"over_budget": 1}
    # The producer timestamp, when given, starts the end-to-end clock.
    res2 = core.process([json.dumps(old).encode()], timestamps=[NOW - 0.02], now=NOW)
    assert not json.loads(res2.decisions[0][1])["degraded"]
    assert json.loads(res2.decisions[0][1])["e2e_ms"] == pytest.approx(20.0, abs=0.01)


def test_a_failing_model_still_decides_every_event_by_rules(fraud_booster):
    class Broken(BoosterScorer):
        def predict(self, X, raw_score=False):
            raise RuntimeError("kernel exploded")

    core = fraud_core(fraud_booster, scorer=Broken(fraud_booster))
    res = core.process([json.dumps(fraud_event(i, amount=100.0 + 100 * i)).encode()
                        for i in range(4)], now=NOW)
    records = [json.loads(v) for _, v in res.decisions]
    assert [r["outcome"] for r in records] == ["approve", "approve", "approve", "review"]
    assert all(r["degraded_reasons"] == ["model_error"] and r["score"] is None
               for r in records)
    # Counts per reason over mixed bit masks (model error alone, with over budget).
    old = json.dumps(fraud_event(9, event_time=NOW - 5)).encode()
    res = core.process([old, old, *[json.dumps(fraud_event(i)).encode() for i in range(3)]],
                       now=NOW)
    assert res.degraded_reasons == {"model_error": 5, "over_budget": 2}
    assert res.n_degraded == 5 and res.budget_misses == 2
    assert [json.loads(v)["degraded_reasons"] for _, v in res.decisions][:3] == [
        ["over_budget", "model_error"], ["over_budget", "model_error"], ["model_error"]]


def test_blocked_countries_are_matched_exactly(fraud_booster):
    cfg = config("fraud", policy=bands(blocked=["KP", "IR"]))
    core = fraud_core(fraud_booster, cfg=cfg)
    countries = ["KP", "US", "IR", "DE", "KP"]
    res = core.process([json.dumps(fraud_event(i, country=c, amount=10.0)).encode()
                        for i, c in enumerate(countries)], now=NOW)
    rules = [json.loads(v)["rule"] for _, v in res.decisions]
    assert rules == ["blocked_country", None, "blocked_country", None, "blocked_country"]


def test_model_needing_unknown_features_is_a_config_error(fraud_booster):
    from schemas.errors import ConfigError

    X = np.random.default_rng(0).random((50, 2))
    other = lgb.train({"objective": "binary", "verbose": -1},
                      lgb.Dataset(X, (X[:, 0] > 0.5).astype(float),
                                  feature_name=["amount_usd", "shoe_size"]), 3)
    with pytest.raises(ConfigError, match="shoe_size"):
        fraud_core(fraud_booster, scorer=BoosterScorer(other))


def test_pricing_sweeps_candidates_and_clamps():
    rng = np.random.default_rng(1)
    n = 2000
    ratio = rng.uniform(0.8, 1.2, n)
    # Demand falls steeply with the price ratio: revenue peaks at the lowest candidate.
    X = np.column_stack([ratio, rng.uniform(0, 24, n), rng.uniform(5, 50, n)])
    y = 10.0 * np.exp(-8.0 * (ratio - 0.8))
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, y, feature_name=PRICING_FEATURES), 40)
    model = LoadedModel("pricing", "2", "cd" * 32, compile_lightgbm(booster))
    request = RequestFeatures("pricing", load_vocab(repo_path("pricing")))
    core = BatchCore(config("pricing"), model, request=request)
    docs = [{"event_id": f"p{i}", "sku_id": i, "store_id": "s1", "base_price": 20.0,
             "candidate_price": 21.0, "event_time": NOW} for i in range(3)]
    res = core.process([json.dumps(d).encode() for d in docs], now=NOW)
    records = [json.loads(v) for _, v in res.decisions]
    assert [r["price"] for r in records] == [18.0] * 3  # 0.9 x base, within the 15% step
    assert all(r["outcome"] == "price" and r["score"] > 0 for r in records)


def test_dlq_guard_trips_only_on_a_full_bad_window():
    guard = DlqGuard(0.5, 100)
    guard.add(50, 50)  # not a full window yet
    guard.add(60, 0)  # window of 110 with 50 bad: under the cap, resets
    with pytest.raises(DeadLetterFlood, match="stopping"):
        guard.add(100, 60)


def test_explanations_are_capped_per_batch_and_flagged(fraud_booster):
    core = fraud_core(fraud_booster, max_explain=1)
    res = core.process([json.dumps(fraud_event(i, amount=880.0)).encode() for i in range(4)],
                       now=NOW)
    records = [json.loads(v) for _, v in res.decisions]
    adverse = [r for r in records if r["outcome"] != "approve" and not r["rule"]]
    assert len(adverse) >= 2
    assert sum(bool(r["reasons"]) for r in adverse) == 1
    assert sum(r["reasons_skipped"] for r in adverse) == len(adverse) - 1


def _challenger() -> tuple[lgb.Booster, LoadedModel]:
    """A second, different fraud model (booster, and compiled as version 9)."""
    rng = np.random.default_rng(5)
    X = rng.random((400, len(FRAUD_FEATURES))) * 1000
    other = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4},
                      lgb.Dataset(X, (X[:, 0] < 300).astype(float),
                                  feature_name=FRAUD_FEATURES), 10)
    return other, LoadedModel("fraud", "9", "ef" * 32, compile_lightgbm(other))


def test_challenger_is_scored_in_shadow_and_never_acted_on(fraud_booster):
    other, challenger = _challenger()
    plain = fraud_core(fraud_booster)
    shadow = fraud_core(fraud_booster, challenger=challenger)
    payloads = [json.dumps(fraud_event(i)).encode() for i in range(50)]
    a = [json.loads(v) for _, v in plain.process(payloads, now=NOW).decisions]
    res = shadow.process(payloads, now=NOW)
    b = [json.loads(v) for _, v in res.decisions]
    assert [r["outcome"] for r in a] == [r["outcome"] for r in b]
    assert [r["score"] for r in a] == [r["score"] for r in b]
    np.testing.assert_allclose([r["challenger_score"] for r in b],
                               other.predict(res.features), rtol=1e-9)
    assert {r["challenger_version"] for r in b} == {"fraud@9"}
    assert all(r["challenger_score"] is None for r in a)


def test_explanations_stop_when_their_time_allowance_is_spent(fraud_booster):
    core = fraud_core(fraud_booster)
    core.explain_budget_s = 10.0  # first: every adverse row fits
    events = [json.dumps(fraud_event(i, amount=880.0)).encode() for i in range(12)]
    full = [json.loads(v) for _, v in core.process(events, now=NOW).decisions]
    adverse_ids = {r["event_id"] for r in full if r["outcome"] != "approve" and not r["rule"]}
    assert len(adverse_ids) > 2
    assert all(r["reasons"] for r in full if r["event_id"] in adverse_ids)

    core.explain_budget_s = 0.0  # only the first row (at least one is explained)
    capped = [json.loads(v) for _, v in core.process(events, now=NOW).decisions]
    adverse = [r for r in capped if r["event_id"] in adverse_ids]
    explained = [r for r in adverse if r["reasons"]]
    assert len(explained) == 1
    assert all(r["reasons_skipped"] for r in adverse if not r["reasons"])
    assert not any(r["reasons_skipped"] for r in explained)


def _canonical(value: bytes) -> bytes:
    """The record decoded by the schema's decoder and encoded again through the Struct."""
    return msgspec.json.encode(decoder_for("decision").decode(value))


def test_fast_records_are_exactly_the_decision_struct_encoding(fraud_booster):
    _, challenger = _challenger()
    request = RequestFeatures("fraud", load_vocab(repo_path("fraud")))
    core = BatchCore(config("fraud", name='fr"aud%s'),
                     LoadedModel("fraud", "1", "ab" * 32, BoosterScorer(fraud_booster)),
                     request=request, challenger=challenger, max_explain=2,
                     worker_id="w\\1%d")
    events = [fraud_event(i, amount=880.0) for i in range(6)]  # adverse: explained/skipped
    events += [fraud_event(6, event_time=NOW - 5),  # over budget: degraded
               fraud_event(7, country="KP"),  # hard rule
               fraud_event(8, country="ZZ"),  # a country out of the vocabulary: NaN
               fraud_event(9, event_id='q"uo\\te,%s ü'),  # escapes in a string field
               fraud_event(10, amount=10.0)]
    payloads = [json.dumps(e).encode() for e in events] + [b"{bad"]
    sources = [("in-a" if i % 2 else 'in-"b"', i % 3, 10 + i) for i in range(len(payloads))]
    stamps = [0.0 if i == 6 else NOW - 0.01 for i in range(len(payloads))]  # 0: event_time
    res = core.process(payloads, sources=sources, timestamps=stamps, now=NOW)
    assert len(res.decisions) == len(events) and len(res.dead_letters) == 1
    records = [json.loads(v) for _, v in res.decisions]
    for (key, value), r in zip(res.decisions, records, strict=True):
        assert _canonical(value) == value
        assert key == r["key"].encode()
    # The batch does cover every kind of field value.
    assert any(r["reasons"] for r in records) and any(r["reasons_skipped"] for r in records)
    assert any(r["degraded"] for r in records) and any(r["rule"] for r in records)
    assert any(r["missing_features"] for r in records), [r["missing_features"] for r in records]
    assert {r["source_topic"] for r in records} == {"in-a", 'in-"b"'}
    assert records[9]["event_id"] == 'q"uo\\te,%s ü' and records[0]["pipeline"] == 'fr"aud%s'
    assert records[0]["worker_id"] == "w\\1%d"
    assert all(isinstance(r["challenger_score"], float) for r in records)
    assert [r["source_offset"] for r in records] == [10 + i for i in range(len(events))]


def test_fast_pricing_and_failing_model_records_are_the_struct_encoding():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(0.8, 1.2, 500), rng.uniform(0, 24, 500),
                         rng.uniform(5, 50, 500)])
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, 10.0 - 5 * X[:, 0], feature_name=PRICING_FEATURES), 20)
    model = LoadedModel("pricing", "2", "cd" * 32, compile_lightgbm(booster))
    request = RequestFeatures("pricing", load_vocab(repo_path("pricing")))
    core = BatchCore(config("pricing"), model, request=request)
    docs = [{"event_id": f"p{i}", "sku_id": i, "store_id": "s1", "base_price": 5.0 + i,
             "candidate_price": 6.0, "event_time": NOW - (5 if i == 2 else 0)}
            for i in range(5)]
    res = core.process([json.dumps(d).encode() for d in docs], now=NOW)
    assert [_canonical(v) for _, v in res.decisions] == [v for _, v in res.decisions]
    rules = {json.loads(v)["rule"] for _, v in res.decisions}
    assert "fallback_base_price" in rules  # the old event
    assert res.outcomes == {"price": 5}

    class Broken(BoosterScorer):
        def predict(self, X, raw_score=False):
            raise RuntimeError("kernel exploded")

    failing = fraud_core(None, scorer=Broken(lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(
            rng.random((50, 5)), (rng.random(50) > 0.5).astype(float),
            feature_name=FRAUD_FEATURES), 2)))
    res = failing.process([json.dumps(fraud_event(i)).encode() for i in range(3)], now=NOW)
    assert [_canonical(v) for _, v in res.decisions] == [v for _, v in res.decisions]
    assert all(json.loads(v)["degraded_reasons"] == ["model_error"] for _, v in res.decisions)


def test_record_encoder_feature_ages_and_constants():
    from schemas.decisions import Decision, StageLatencies
    from stream.core.records import DecisionEncoder, constant, json_pieces, string_pieces

    views = ["card_stats", 'odd"view%s']
    enc = DecisionEncoder(views)
    ages = [[0.5, float("nan"), 3.25], [float("inf"), 2.0, 0.0]]
    fields = {
        "event_id": string_pieces(["a", "b,c", 'd"']), "pipeline": constant("p%"),
        "key": json_pieces([1, 2, 3]), "outcome": [constant("approve")] * 3,
        "score": json_pieces([0.1, float("nan"), 1e-7]), "model_name": constant("m"),
        "model_version": constant("1"), "model_sha256": constant("ab"),
        "price": json_pieces([None, 1.5, 2.0]), "rule": constant(None),
        "reasons": b"[]", "reasons_skipped": json_pieces([True, False, True]),
        "degraded": b"false", "degraded_reasons": b"[]", "missing_features": b"0",
        "latency_ms": constant(StageLatencies(decode=0.1)), "e2e_ms": json_pieces([1.0] * 3),
        "event_time": json_pieces([1.0, 2.0, 3.0]), "decided_at": constant(4.0),
        "worker_id": constant("w"), "source_topic": string_pieces(["t1", "t2", "t1"]),
        "source_partition": b"-1", "source_offset": json_pieces([7, 8, 9]),
        "challenger_version": constant(None), "challenger_score": b"null",
        "schema_version": b"1",
    }
    out = enc.encode(3, fields, [json_pieces(a) for a in ages])
    for i, value in enumerate(out):
        assert _canonical(value) == value
        d = decoder_for("decision").decode(value)
        assert isinstance(d, Decision)
        assert list(d.feature_age_s) == views
        assert d.feature_age_s[views[0]] == (None if i == 1 else ages[0][i])
    with pytest.raises(KeyError, match="schema_version"):
        enc.encode(3, {k: v for k, v in fields.items() if k != "schema_version"}, None)


def test_price_sweep_equals_rebuilding_the_pool_per_candidate():
    rng = np.random.default_rng(3)
    request = RequestFeatures("pricing", load_vocab(repo_path("pricing")))
    names = ["price_ratio", "log_price_ratio", "candidate_price", "hour_of_day", "base_price"]
    X = np.column_stack([rng.uniform(0.8, 1.2, 400), rng.normal(size=400),
                         rng.uniform(5, 50, 400), rng.uniform(0, 24, 400),
                         rng.uniform(5, 50, 400)])
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, 10.0 - 5 * X[:, 0] + X[:, 3] / 10, feature_name=names),
                        20)
    model = LoadedModel("pricing", "2", "cd" * 32, compile_lightgbm(booster))
    core = BatchCore(config("pricing", policy=sweep([0.85, 0.95, 1.0, 1.1])),
                     model, request=request)
    docs = [{"event_id": f"p{i}", "sku_id": i, "store_id": "s1",
             "base_price": float(rng.uniform(5, 50)), "candidate_price": 7.0,
             "event_time": NOW - 3600 * i} for i in range(30)]
    batch = decoder_for("pricing_request")
    events = [batch.decode(json.dumps(d).encode()) for d in docs]
    cols = core._columns(events)
    online = np.zeros((len(docs), 0))
    X0 = core._pool(cols, online, len(docs))[:, core._plan]
    got = core._price_sweep(model.scorer, core._plan, cols, online, X0)
    want = []
    for m in [0.85, 0.95, 1.0, 1.1]:
        swept = {**cols, "candidate_price": cols["base_price"] * m}
        want.append(booster.predict(core._pool(swept, online, len(docs))[:, core._plan]))
    np.testing.assert_allclose(got, np.column_stack(want), rtol=1e-12)


def test_saabas_reason_codes_from_the_compiled_scorer(fraud_booster):
    compiled = compile_lightgbm(fraud_booster, cache_dir=False)
    base = config("fraud")
    cfg = msgspec.structs.replace(
        base, model=msgspec.structs.replace(base.model, reason_method="saabas"))
    core = fraud_core(fraud_booster, cfg=cfg, scorer=compiled)
    core.explain_budget_s = 10.0
    amounts = [800.0, 10.0, 850.0, 900.0]
    res = core.process([json.dumps(fraud_event(i, amount=a)).encode()
                        for i, a in enumerate(amounts)], now=NOW)
    saabas = compiled.contributions(res.features, method="saabas")[:, :-1]
    shap = compiled.contributions(res.features)[:, :-1]
    assert not np.allclose(saabas, shap)  # the method really changes the attribution
    for j, (_, value) in enumerate(res.decisions):
        rec = json.loads(value)
        if rec["outcome"] == "approve":
            continue
        top = np.argsort(-saabas[j], kind="stable")[:3]
        assert [r["feature"] for r in rec["reasons"]] == [FRAUD_FEATURES[t] for t in top]
        assert [r["contribution"] for r in rec["reasons"]] == pytest.approx(
            saabas[j, top], abs=1e-6)


def test_unknown_reason_method_is_a_config_error(tmp_path):
    from schemas.errors import ConfigError
    from stream.config import load_pipeline

    text = Path("pipelines/fraud.yaml").read_text().replace(
        "reason_method: saabas", "reason_method: lime")
    assert "reason_method: lime" in text
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="reason_method"):
        load_pipeline(path)


class TableReader:
    """An online reader over a fixed table (presence and staleness per row and view):
    the core's flags logic with plain values (the real reader is tested on Redis)."""

    views = ("card", "merchant", "velocity")
    join_keys = ("card_id",)

    def __init__(self, present, stale) -> None:
        self.present, self.stale = np.array(present, bool), np.array(stale, bool)

    def read(self, entities, now=None):
        from features.online import ReadResult

        n = len(entities["card_id"])
        age = np.where(self.present[:n] | self.stale[:n], 5.0, np.nan)
        return ReadResult(values=np.full((n, 1), np.nan), present=self.present[:n],
                          stale=self.stale[:n], age=age, views=self.views)


@pytest.mark.parametrize("rows", [
    # (present, stale) per view card / merchant / velocity; velocity is optional
    [((1, 1, 1), (0, 0, 0))] * 3,  # all there, fresh: nothing degraded
    [((1, 1, 1), (0, 0, 0)), ((0, 1, 1), (0, 0, 0)), ((1, 1, 0), (0, 0, 0)),
     ((1, 0, 1), (0, 1, 0)), ((0, 0, 1), (1, 0, 0)), ((0, 1, 0), (0, 0, 1))],
])
def test_missing_and_stale_views_flag_exactly_their_rows(fraud_booster, rows):
    present = [p for p, _ in rows]
    stale = [s for _, s in rows]
    core = fraud_core(fraud_booster, reader=TableReader(present, stale),
                      online_names=["avg_amount_30d"], optional_views=["velocity"])
    res = core.process([json.dumps(fraud_event(i)).encode() for i in range(len(rows))],
                       now=NOW)
    want = []
    for p, s in rows:
        reasons = []
        if any(not pi and not si for pi, si, req in zip(p, s, (1, 1, 0), strict=True) if req):
            reasons.append("features_missing")
        if any(s):
            reasons.append("features_stale")
        want.append(reasons)
    got = [json.loads(v) for _, v in res.decisions]
    assert [r["degraded_reasons"] for r in got] == want
    assert [r["degraded"] for r in got] == [bool(w) for w in want]
    assert [list(r["feature_age_s"]) for r in got] == [list(TableReader.views)] * len(rows)
    assert [_canonical(v) for _, v in res.decisions] == [v for _, v in res.decisions]
    assert res.n_degraded == sum(bool(w) for w in want)


@pytest.mark.parametrize("n", [1, 3])
def test_record_encoder_all_constant_and_single_column_batches(n):
    from schemas.decisions import StageLatencies
    from stream.core.records import DecisionEncoder, constant, json_pieces

    fields = {
        "event_id": constant("e"), "pipeline": constant("p%s"), "key": constant("1"),
        "outcome": constant("approve"), "score": constant(0.25), "model_name": constant("m"),
        "model_version": constant("1"), "model_sha256": constant("ab"), "price": b"null",
        "rule": constant(None), "reasons": b"[]", "reasons_skipped": b"false",
        "degraded": b"false", "degraded_reasons": b"[]", "missing_features": b"0",
        "latency_ms": constant(StageLatencies(decode=0.1)), "e2e_ms": constant(1.5),
        "event_time": constant(2.0), "decided_at": constant(4.0), "worker_id": constant("w"),
        "source_topic": constant("t"), "source_partition": b"-1", "source_offset": b"-1",
        "challenger_version": constant(None), "challenger_score": b"null",
        "schema_version": b"1",
    }
    for views, ages in [((), None), (("v",), None), (("v", "w"), [json_pieces([0.5] * n)])]:
        enc = DecisionEncoder(views)
        out = enc.encode(n, fields, ages)
        assert len(out) == n and all(_canonical(v) == v for v in out)
        # One per-event column, at the very start and at the very end of a record.
        for name in ("event_id", "schema_version"):
            one = dict(fields)
            one[name] = ([str(i).encode() for i in range(n)] if name == "event_id"
                         else json_pieces([1] * n))
            got = enc.encode(n, one, ages)
            assert all(_canonical(v) == v for v in got)
            if name == "event_id":
                assert [json.loads(v)["event_id"] for v in got] == [str(i) for i in range(n)]


def test_record_encoder_refuses_a_short_column():
    from stream.core.records import DECISION_FIELDS, DecisionEncoder, json_pieces

    enc = DecisionEncoder(["v"])
    fields: dict = dict.fromkeys(DECISION_FIELDS, b"0")
    fields["score"] = json_pieces([0.5, 0.25])
    with pytest.raises(ValueError, match="score"):
        enc.encode(3, fields, None)
    fields["score"] = b"0.5"
    with pytest.raises(ValueError, match="feature_age_s"):
        enc.encode(3, fields, [json_pieces([1.0, 2.0])])


def test_the_feature_matrix_reaches_the_scorer_c_ordered(fraud_booster):
    """The compiled scorer takes a C-ordered float64 matrix as it is (any other layout is
    copied first, a cost per batch)."""
    seen = []

    class Recording(BoosterScorer):
        def predict(self, X, raw_score=False):
            seen.append(X.flags.c_contiguous and X.dtype == np.float64)
            return super().predict(X, raw_score)

    core = fraud_core(fraud_booster, scorer=Recording(fraud_booster),
                      challenger=LoadedModel("fraud", "2", "cd" * 32,
                                             Recording(fraud_booster)))
    res = core.process([json.dumps(fraud_event(i)).encode() for i in range(20)], now=NOW)
    assert seen == [True, True] and res.features.flags.c_contiguous
