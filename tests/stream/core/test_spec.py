"""What the pipeline file declares reaches the core: the event's key, id and time
fields, the policy's fields; a name the pipeline cannot provide is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from schemas.errors import ConfigError
from stream.core.specs import event_spec
from tests.stream.core.test_pipeline import (
    NOW,
    bands,
    config,
    fraud_core,
    fraud_event,
    with_config,
)


def test_string_fields_come_from_the_schema_types():
    spec = event_spec("fraud_transaction", "card_id", "event_time")
    assert spec.strings == ("event_id", "merchant_id", "currency", "country", "channel")
    assert spec.fields[:2] == ("event_id", "card_id")


@pytest.mark.parametrize(("event", "match"), [
    ({"key": "card_idd"}, "event.key 'card_idd' is not a field"),
    ({"key": "merchant_id"}, "event.key 'merchant_id' .* must be IntType"),
    ({"key": "card_id", "time_field": "country"}, "event.time_field 'country'"),
    ({"key": "card_id", "id_field": "mcc"}, "event.id_field 'mcc'"),
])
def test_event_fields_the_schema_lacks_are_config_errors(booster, event, match):
    with pytest.raises(ConfigError, match=match):
        fraud_core(booster, cfg=with_config(config("fraud"), event=event))


def test_a_policy_field_nobody_provides_is_a_config_error(booster):
    policy = bands()
    policy["rules"][1]["field"] = "amount_eur"
    with pytest.raises(ConfigError, match=r"policy.rules\[1\].field 'amount_eur'"):
        fraud_core(booster, cfg=with_config(config("fraud"), policy=policy))


def test_rules_read_any_event_field_and_the_first_listed_names_the_decision(booster):
    policy = bands(blocked=["KP"], max_amount=1e9)
    policy["rules"] = [{"name": "casino", "field": "mcc", "above": 7000, "outcome": "review"},
                       {"name": "atm_abroad", "field": "channel", "in": ["atm"],
                        "outcome": "decline"}]
    core = fraud_core(booster, cfg=with_config(config("fraud"), policy=policy))
    docs = [fraud_event(0, mcc=7995, channel="pos", amount=5.0),
            fraud_event(1, mcc=5411, channel="atm", amount=5.0),
            fraud_event(2, mcc=7995, channel="atm", amount=5.0),
            fraud_event(3, mcc=5411, channel="pos", amount=5.0)]
    res = core.process([json.dumps(d).encode() for d in docs], now=NOW)
    got = [(r["outcome"], r.get("rule")) for r in (json.loads(v) for _, v in res.decisions)]
    # Every matching rule raises the outcome; the first listed names it.
    assert got == [("review", "casino"), ("decline", "atm_abroad"), ("decline", "casino"),
                   ("approve", None)]


def test_the_event_fields_are_the_pipeline_files(booster):
    # The decision record's key, id and time come from the declared fields.
    cfg = with_config(config("fraud"), event={"key": "mcc", "time_field": "event_time"})
    core = fraud_core(booster, cfg=cfg)
    res = core.process([json.dumps(fraud_event(0, mcc=4511)).encode()], now=NOW)
    assert res.decisions[0][0] == b"4511"
    assert json.loads(res.decisions[0][1])["key"] == "4511"
    assert np.array_equal(res.columns["mcc__int"], [4511])
