"""The velocity script (format 3) against the format-1 one it replaced, on the real Redis.

Same events in, same Feast hash bytes out: run through the old script alone, through the
new one alone, and through the old one then the new one (a deployment upgrading in place
over the cmsgpack state keys it holds). Amounts are multiples of 1/4, so every sum is
exact in float64 whatever order either script adds in, and the bytes must match exactly.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import layout
from features.push import VelocityUpdater
from tests.features.velocity_legacy import LEGACY_SCRIPT

pytestmark = pytest.mark.integration

CARDS = (11, 12, 13, 14)
BASE = (int(time.time()) // 60 - 400) * 60  # a minute boundary, a few hours ago


def _use_legacy(updater: VelocityUpdater) -> VelocityUpdater:
    updater._script = LEGACY_SCRIPT
    updater._sha = hashlib.sha1(LEGACY_SCRIPT.encode(), usedforsecurity=False).hexdigest()
    return updater


def _keys(project: str, card: int) -> tuple[bytes, bytes]:
    key = layout.redis_key(project, ["card_id"], [layout.KIND_INT64], [card])
    return key, b"ssvel:" + key


def _run(
    updaters: list[VelocityUpdater], split: int, batches: list[Any], client: Any, project: str
) -> dict[int, dict[bytes, bytes]]:
    """Apply batches[:split] with updaters[0] and the rest with updaters[1]; the hashes."""
    for card in CARDS:
        client.delete(*_keys(project, card))
    for i, (cards, amounts, times) in enumerate(batches):
        done = updaters[0 if i < split else 1].update(cards, amounts, times)
        assert done.status == "ok", done
    return {card: client.hgetall(_keys(project, card)[0]) for card in CARDS}


batch = st.lists(
    st.tuples(
        st.sampled_from(CARDS),
        st.integers(0, 4000).map(lambda q: q / 4),  # exact in binary
        # minutes 0-3 often (same bucket: the in-place path), both sides of the 10 and
        # 60 minute window edges, and up to 150 (out of every window)
        st.one_of(
            st.integers(0, 3), st.sampled_from([9, 10, 11, 12, 59, 60, 61, 62]), st.integers(0, 150)
        ),
        st.integers(0, 59_999),  # ms inside the minute
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.lists(batch, min_size=1, max_size=8), split=st.integers(0, 8))
def test_same_feast_bytes_as_the_format_1_script(
    feast_repo: Any, redis_url: str, data: list[list[tuple[int, float, int, int]]], split: int
) -> None:
    new = VelocityUpdater(feast_repo.path, cards_per_script=3)
    old = _use_legacy(VelocityUpdater(feast_repo.path, cards_per_script=3))
    client = redis.Redis.from_url(redis_url)
    try:
        batches = [
            (
                np.array([e[0] for e in b], np.int64),
                np.array([e[1] for e in b]),
                np.array([BASE + e[2] * 60 + e[3] / 1000 for e in b]),
            )
            for b in data
        ]
        project = feast_repo.project
        want = _run([old, old], len(batches), batches, client, project)
        assert _run([new, new], 0, batches, client, project) == want
        assert _run([old, new], split, batches, client, project) == want  # upgrade in place
    finally:
        client.close()
        new.close()
        old.close()


def test_state_keeps_the_longest_window_and_reads_like_before(
    feast_repo: Any, redis_url: str
) -> None:
    """A card with events in 90 minutes keeps 60 buckets (59 + the newest in the header);
    events in the newest bucket only rewrite the header; the windows stay right."""
    client = redis.Redis.from_url(redis_url)
    new = VelocityUpdater(feast_repo.path)
    old = _use_legacy(VelocityUpdater(feast_repo.path))
    project = feast_repo.project
    try:
        times = BASE + np.arange(90) * 60.0 + 5
        for updater in (old, new):
            for card in CARDS:
                client.delete(*_keys(project, card))
            for t in times:  # one batch per minute, like a live stream
                assert updater.update([11], [1.25], [t]).status == "ok"
            for k in range(5):  # then more events in the newest minute: the in-place path
                done = updater.update([11, 11], [0.5, 0.25], [times[-1] + k, times[-1]])
                assert done.status == "ok"
            state = client.get(_keys(project, 11)[1])
            assert state is not None
            if updater is new:
                assert state[:1] == b"W" and len(state) == 62 + 59 * 16
            got = feast_repo.store.get_online_features(
                features=["card_velocity:velocity_count_10m", "card_velocity:velocity_sum_1h"],
                entity_rows=[{"card_id": 11}],
            ).to_dict()
            assert got["velocity_count_10m"] == [10 + 10]
            assert got["velocity_sum_1h"] == [pytest.approx(60 * 1.25 + 5 * 0.75)]
    finally:
        client.close()
        new.close()
        old.close()


def test_windows_of_thousands_of_buckets(feast_repo: Any, redis_url: str) -> None:
    """One-second buckets: the 1 h window holds 3,600 of them, more than one struct call
    (or Lua's C stack) takes at once; the state still round-trips and matches format 1."""
    client = redis.Redis.from_url(redis_url)
    new = VelocityUpdater(feast_repo.path, bucket_s=1, cards_per_script=2)
    old = _use_legacy(VelocityUpdater(feast_repo.path, bucket_s=1, cards_per_script=2))
    rng = np.random.default_rng(9)
    seconds = rng.permutation(3590)[:3400]  # 3,400 distinct buckets inside the hour
    batches = []
    for part in np.array_split(np.sort(seconds), 3):  # then two late batches
        n = len(part)
        cards = np.where(rng.random(n) < 0.9, 11, 12).astype(np.int64)
        batches.append((cards, rng.integers(0, 400, n) / 4, BASE + part + 0.5))
    batches += [batches[0], batches[1]]
    try:
        project = feast_repo.project
        want = _run([old, old], len(batches), batches, client, project)
        assert _run([new, new], 0, batches, client, project) == want
        assert _run([old, new], 2, batches, client, project) == want
        state = client.get(_keys(project, 11)[1])
        assert state is not None and len(state) > 60 + 3000 * 16
    finally:
        client.close()
        new.close()
        old.close()
