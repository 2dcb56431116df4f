"""The outcome stream without Kafka: an outcome read before its decision waits and then
joins; it counts as unmatched once the wait (or the bounded buffer) is over; malformed
outcomes are counted, not raised; roles follow the decision records."""

from __future__ import annotations

import msgspec

from schemas.decisions import Decision
from schemas.outcomes import Outcome
from stream.drift.outcome_stream import OutcomeStream
from stream.drift.outcomes import OutcomeConfig

enc = msgspec.json.Encoder()


def _decision(i: int, challenger: bool = True) -> bytes:
    return enc.encode(Decision(
        event_id=f"e{i}", pipeline="p", key="k", outcome="approve", score=i / 10,
        model_name="m", model_version="1", model_sha256="a" * 64, decided_at=100.0 + i,
        challenger_version="2" if challenger else None,
        challenger_score=(1 - i / 10) if challenger else None))


def _outcome(i: int, label: int = 1) -> bytes:
    return enc.encode(Outcome(event_id=f"e{i}", label=label, outcome_time=200.0 + i))


def test_early_outcomes_wait_for_their_decision():
    s = OutcomeStream("p", OutcomeConfig(), early_seconds=5.0)
    s.feed([], [_outcome(1), _outcome(2, 0)], now=0.0)
    assert s.joiner.counts.joined == 0 and s.joiner.counts.unmatched == 0
    s.feed([_decision(1), _decision(2, challenger=False)], [], now=1.0)
    assert s.joiner.counts.joined == 2
    assert s.roles == {"1": "champion", "2": "challenger"}
    assert {r.model_version: r.n for r in s.records(at=3.0)} == {"1": 2, "2": 1}
    s.feed([], [_outcome(9)], now=2.0)
    s.feed([], [], now=6.0)
    assert s.joiner.counts.unmatched == 0  # waited 4 s of 5
    s.feed([], [], now=7.5)
    assert s.joiner.counts.unmatched == 1


def test_buffer_is_bounded_and_drain_ends_a_replay():
    s = OutcomeStream("p", OutcomeConfig(), early_seconds=float("inf"), max_early=3)
    s.feed([], [_outcome(i) for i in range(5)], now=0.0)
    assert s.joiner.counts.unmatched == 2  # two did not fit in the buffer
    s.feed([_decision(i) for i in range(5)], [], now=1.0)
    s.drain()
    assert s.joiner.counts.joined == 3


def test_malformed_outcomes_are_counted():
    s = OutcomeStream("p", OutcomeConfig())
    s.feed([b"not a decision"], [b"{", b'{"event_id": "e1", "label": 3, "outcome_time": 1}',
                                 b'{"event_id": "e1", "value": 9.5, "outcome_time": 1}'],
           now=0.0)
    assert s.invalid == 3 and s.counts().invalid == 3 and s.joiner.pending == 0
