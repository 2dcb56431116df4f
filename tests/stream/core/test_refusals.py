"""Events the core refuses before scoring, limits in the reference currency, and a
partial online read: each bad event is one dead letter, each unread row one flag."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from features.online import ReadResult
from schemas.deadletter import ERROR_CODES
from schemas.registry import decoder_for
from tests.stream.core.test_pipeline import (
    NOW,
    config,
    fraud_core,
    fraud_event,
    with_config,
)


def _run(core, docs, **kw):
    payloads = [json.dumps(d).encode() for d in docs]
    sources = [("in", 0, i) for i in range(len(payloads))]
    return core.process(payloads, sources=sources, keys=[b"k"] * len(payloads), now=NOW, **kw)


def _dead(res):
    decode = decoder_for("dead_letter").decode
    return [(d.offset, d.error_code) for d in (decode(v) for _, v in res.dead_letters)]


def test_new_codes_are_dead_letter_codes():
    assert {"event_time_skew", "unknown_currency"} <= set(ERROR_CODES)


def test_an_event_dated_beyond_the_allowed_skew_is_one_dead_letter(booster):
    core = fraud_core(booster)
    docs = [fraud_event(0), fraud_event(1, event_time=NOW + 299),
            fraud_event(2, event_time=NOW + 301), fraud_event(3, event_time=4_070_908_800.0),
            fraud_event(4)]
    res = _run(core, docs)
    assert _dead(res) == [(2, "event_time_skew"), (3, "event_time_skew")]
    assert sorted(json.loads(v)["event_id"] for _, v in res.decisions) == ["e0", "e1", "e4"]
    assert res.indices == [0, 1, 4]
    assert [json.loads(v)["source_offset"] for _, v in res.decisions] == [0, 1, 4]
    assert res.dead_letter_reasons == {"event_time_skew": 2}
    # The skew is the pipeline's setting.
    lax = fraud_core(booster,
                     cfg=with_config(config("fraud"), event={"key": "card_id", "max_skew_s": 1000}))
    assert _dead(_run(lax, docs)) == [(3, "event_time_skew")]


def test_a_negative_skew_is_a_config_error():
    with pytest.raises(msgspec.ValidationError, match="max_skew_s"):
        with_config(config("fraud"), event={"key": "card_id", "max_skew_s": -1})


def test_a_currency_without_a_rate_is_one_dead_letter_not_nan_features(booster):
    core = fraud_core(booster)
    docs = [fraud_event(0), fraud_event(1, currency="XXX"), fraud_event(2, currency="EUR"),
            fraud_event(3, currency="ZZZ", event_time=NOW + 9999)]
    res = _run(core, docs)
    # One record per bad event, even with two faults (the first check wins).
    assert _dead(res) == [(1, "unknown_currency"), (3, "event_time_skew")]
    records = [json.loads(v) for _, v in res.decisions]
    assert [r["event_id"] for r in records] == ["e0", "e2"]
    assert all(r["missing_features"] == 0 for r in records)
    dl = decoder_for("dead_letter").decode(res.dead_letters[0][1])
    assert "XXX" in dl.error and json.loads(dl.payload)["currency"] == "XXX"


def test_a_whole_batch_refused_gives_only_dead_letters(booster):
    res = _run(fraud_core(booster), [fraud_event(i, currency="QQQ") for i in range(3)])
    assert res.decisions == [] and _dead(res) == [(i, "unknown_currency") for i in range(3)]


def test_amount_limits_compare_the_reference_currency(booster):
    # max_amount 5000 and fallback 300 (USD): 6000 JPY is ~40 USD, 4500 GBP ~5700 USD.
    core = fraud_core(booster)
    docs = [fraud_event(0, amount=6000.0, currency="JPY"),
            fraud_event(1, amount=4500.0, currency="GBP"),
            fraud_event(2, amount=4500.0, currency="USD")]
    records = [json.loads(v) for _, v in _run(core, docs).decisions]
    rules = {r["event_id"]: r.get("rule") for r in records}
    assert rules["e0"] != "amount_over_limit"
    assert rules["e1"] == "amount_over_limit" and records[1]["outcome"] != "approve"
    assert rules["e2"] != "amount_over_limit"
    # Degraded (over budget): the fallback limit (300 USD) is in USD too.
    old = [fraud_event(0, amount=6000.0, currency="JPY", event_time=NOW - 60),
           fraud_event(1, amount=280.0, currency="GBP", event_time=NOW - 60)]
    got = {r["event_id"]: r for r in (json.loads(v) for _, v in _run(core, old).decisions)}
    assert got["e0"].get("rule") == "fallback_amount" and got["e0"]["outcome"] == "approve"
    assert got["e1"].get("rule") == "fallback_amount" and got["e1"]["outcome"] == "review"


class PartialReader:
    """A Redis Cluster read with one node down: the rows it held were not read."""

    views = ("card", "merchant")
    join_keys = ("card_id",)

    def __init__(self, unavailable) -> None:
        self.unavailable = np.array(unavailable, bool)

    def read(self, entities, now=None):
        n = len(entities["card_id"])
        down = self.unavailable[:n]
        present = np.repeat(~down[:, None], 2, axis=1)
        age = np.where(present, 5.0, np.nan)
        return ReadResult(values=np.where(down[:, None], np.nan, 1.0), present=present,
                          stale=np.zeros_like(present), age=age, views=self.views,
                          status="partial", error="node down", unavailable=down)


def test_a_partial_read_flags_only_the_unread_rows(booster):
    down = [False, True, False, True, False]
    core = fraud_core(booster, reader=PartialReader(down),
                      online_names=["avg_amount_30d"])
    res = _run(core, [fraud_event(i) for i in range(5)])
    got = [json.loads(v) for _, v in res.decisions]
    assert [r["degraded_reasons"] for r in got] == [
        ["online_store_down"] if d else [] for d in down]
    assert res.n_degraded == 2 and res.degraded_reasons == {"online_store_down": 2}
    assert res.online_status == "partial"
