"""Replays and clocks: input applied twice counts once; a far-future event is refused.

Kafka redelivers after every crash, failed delivery or rebalance: a consumer resumes from
its group's committed offset, at or below what it had applied, and two consumers can
briefly hold one partition. The velocity state keeps a watermark per card and input
partition; these tests drive the updater the way such consumers do and compare the Feast
hash with a brute-force count over the unique events.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.push import EVENT_TIME_SKEW, VelocityUpdater, event_time_skewed, partition_key
from tests.features.test_push import REFS, _expected

pytestmark = pytest.mark.integration

NOW = time.time()
YEAR_2099 = 4_070_908_800.0


def _features(repo: Any, cards: list[int]) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = repo.store.get_online_features(
        features=REFS, entity_rows=[{"card_id": c} for c in cards]
    ).to_dict()
    return got


def _clear(client: Any, updater: VelocityUpdater, cards: list[int]) -> None:
    for card in cards:
        key = updater.card_key(card)
        client.delete(key, b"ssvel:" + key)


@pytest.mark.parametrize("in_hash", [False, True], ids=["state_key", "state_in_hash"])
def test_the_same_batch_twice_counts_once(feast_repo: Any, in_hash: bool) -> None:
    updater = VelocityUpdater(feast_repo.path, state_in_hash=in_hash)
    cards, amounts = [5, 5, 5], [10.0, 20.0, 30.0]
    times = [NOW - 30, NOW - 20, NOW - 10]
    source = {"topics": "payments", "partitions": [3, 3, 3], "offsets": [100, 101, 102]}
    first = updater.update(cards, amounts, times, **source)
    assert first.status == "ok" and first.rows == 3 and first.skipped == 0
    again = updater.update(cards, amounts, times, **source)
    assert again.status == "ok" and again.rows == 0 and again.skipped == 3
    got = _features(feast_repo, [5])
    assert got["velocity_count_10m"] == [3] and got["velocity_sum_10m"] == [60.0]
    # a redelivery that overlaps: two old records and one new
    more = updater.update(
        [5, 5, 5], [20.0, 30.0, 5.0], [NOW - 20, NOW - 10, NOW - 5],
        topics="payments", partitions=[3, 3, 3], offsets=[101, 102, 103],
    )
    assert more.rows == 1 and more.skipped == 2
    got = _features(feast_repo, [5])
    assert got["velocity_count_10m"] == [4] and got["velocity_sum_10m"] == [65.0]
    # the same offset on another partition or topic is another record
    other = updater.update([5, 5], [1.0, 1.0], [NOW, NOW], topics=["payments", "refunds"],
                           partitions=[4, 3], offsets=[100, 100])
    assert other.rows == 2
    assert _features(feast_repo, [5])["velocity_count_10m"] == [6]
    updater.close()


def test_a_far_future_event_is_refused_and_does_not_freeze_the_card(feast_repo: Any) -> None:
    updater = VelocityUpdater(feast_repo.path, max_skew_s=300)
    res = updater.update([7, 8], [50.0, 1.0], [YEAR_2099, NOW], now=NOW)
    assert res.status == "ok" and res.refused.tolist() == [0] and res.rows == 1
    assert event_time_skewed([YEAR_2099, NOW + 299, NOW + 301], NOW, 300).tolist() == [
        True, False, True,
    ]
    assert EVENT_TIME_SKEW == "event_time_skew"
    for k in range(15):
        assert updater.update([7], [2.0], [NOW - 600 + 30 * k], now=NOW).rows == 1
    got = _features(feast_repo, [7])
    assert got["velocity_count_1h"] == [15] and got["velocity_sum_1h"] == [30.0]
    updater.close()


def test_a_card_frozen_before_the_skew_bound_heals(feast_repo: Any) -> None:
    """A state written by a version without the bound (its newest bucket in 2099) is
    dropped by the next update; the windows count the real events again."""
    unbounded = VelocityUpdater(feast_repo.path, max_skew_s=1e12)
    assert unbounded.update([9], [50.0], [YEAR_2099]).rows == 1
    updater = VelocityUpdater(feast_repo.path)
    for k in range(15):
        assert updater.update([9], [2.0], [NOW - 600 + 30 * k]).rows == 1
    got = _features(feast_repo, [9])
    assert got["velocity_count_10m"] == [15] and got["velocity_count_1h"] == [15]
    unbounded.close()
    updater.close()


def test_partition_keys_are_exact_and_bounded() -> None:
    assert partition_key("a", 0) != partition_key("b", 0) != partition_key("a", 1)
    assert float(int(partition_key("payments", 1023))) == partition_key("payments", 1023)
    with pytest.raises(ValueError):
        partition_key("a", 1 << 20)


CARDS = [31, 32, 33]
N_EVENTS = 40  # per partition


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_interleaving_of_redeliveries_counts_each_event_once(
    feast_repo: Any, redis_url: str, data: st.DataObject
) -> None:
    """Consumers of two partitions start and restart at any committed point, deliver
    batches in offset order, interleaved at random (zombies included), sometimes a batch
    with itself repeated; the windows equal a brute-force count over the unique events."""
    in_hash = data.draw(st.booleans(), label="state_in_hash")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    events = {
        p: (
            rng.choice(CARDS, N_EVENTS).astype(np.int64),
            rng.integers(0, 400, N_EVENTS) / 4,  # exact sums in any order
            NOW - rng.random(N_EVENTS) * 5400,  # 90 min: some leave the 10 min and 1 h windows
        )
        for p in (0, 1)
    }
    updater = VelocityUpdater(feast_repo.path, state_in_hash=in_hash, cards_per_script=2)
    client = redis.Redis.from_url(redis_url)
    _clear(client, updater, CARDS)
    delivered = {p: np.zeros(N_EVENTS, bool) for p in events}
    runs: list[list[int]] = []  # [partition, next offset]

    def deliver(run: list[int], size: int, twice: bool) -> None:
        p, start = run
        stop = min(start + size, N_EVENTS)
        idx = np.arange(start, stop)
        if twice:
            idx = np.concatenate((idx, idx))
        cards, amounts, times = events[p]
        res = updater.update(cards[idx], amounts[idx], times[idx], topics="in",
                             partitions=np.full(len(idx), p), offsets=idx, now=NOW)
        assert res.status == "ok", res.error
        delivered[p][start:stop] = True
        run[1] = stop

    def committed(p: int) -> int:
        missing = np.flatnonzero(~delivered[p])
        return int(missing[0]) if len(missing) else N_EVENTS

    for _ in range(data.draw(st.integers(1, 14), label="steps")):
        live = [r for r in runs if r[1] < N_EVENTS]
        if not live or data.draw(st.booleans(), label="new consumer"):
            p = data.draw(st.sampled_from([0, 1]), label="partition")
            runs.append([p, data.draw(st.integers(0, committed(p)), label="resume at")])
            continue
        run = data.draw(st.sampled_from(live), label="run")
        deliver(run, data.draw(st.integers(1, 15), label="batch"),
                data.draw(st.booleans(), label="twice"))
    for p in events:  # a last consumer takes each partition to its end
        run = [p, committed(p)]
        while run[1] < N_EVENTS:
            deliver(run, 16, False)
    want = _expected(*(np.concatenate(x) for x in zip(*events.values(), strict=True)))
    got = _features(feast_repo, CARDS)
    try:
        for i, card in enumerate(CARDS):
            for name in ("velocity_count_10m", "velocity_count_1h", "velocity_sum_10m"):
                assert got[name][i] == want[card][name], (card, name)
    finally:
        _clear(client, updater, CARDS)
        client.close()
        updater.close()
