"""Streaming velocity updates: visible to the Feast SDK, windows right, batches composable."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from features.exceptions import FeatureRepoError
from features.push import VelocityUpdater, parse_window

pytestmark = pytest.mark.integration

REFS = [
    "card_velocity:velocity_count_10m",
    "card_velocity:velocity_sum_10m",
    "card_velocity:velocity_count_1h",
    "card_velocity:velocity_sum_1h",
]
WINDOWS = {
    "velocity_count_10m": 10,
    "velocity_sum_10m": 10,
    "velocity_count_1h": 60,
    "velocity_sum_1h": 60,
}  # in 60 s buckets


def _expected(
    cards: np.ndarray, amounts: np.ndarray, times: np.ndarray
) -> dict[int, dict[str, Any]]:
    """Brute force: per card, events whose minute bucket is within N buckets of its newest."""
    out: dict[int, dict[str, Any]] = {}
    buckets = np.floor(times / 60).astype(np.int64)
    for card in np.unique(cards):
        mine = cards == card
        newest = buckets[mine].max()
        row: dict[str, Any] = {"ts": math.floor(times[mine].max())}
        for name, n in WINDOWS.items():
            inside = mine & (buckets > newest - n)
            row[name] = int(inside.sum()) if "count" in name else float(amounts[inside].sum())
        out[int(card)] = row
    return out


def _events(n: int, n_cards: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cards = rng.integers(1, n_cards + 1, n).astype(np.int64) * 7919
    amounts = np.round(rng.gamma(2.0, 30.0, n), 2)
    times = time.time() - rng.random(n) * 3 * 3600  # spread over 3 h: some fall out of 1 h
    return cards, amounts, times


def _check_sdk(repo: Any, expected: dict[int, dict[str, Any]]) -> None:
    cards = sorted(expected)
    got = repo.store.get_online_features(
        features=REFS, entity_rows=[{"card_id": c} for c in cards]
    ).to_dict(include_event_timestamps=True)
    for i, card in enumerate(cards):
        want = expected[card]
        assert got["velocity_count_10m"][i] == want["velocity_count_10m"]
        assert got["velocity_count_1h"][i] == want["velocity_count_1h"]
        assert got["velocity_sum_10m"][i] == pytest.approx(
            want["velocity_sum_10m"], rel=1e-12, abs=1e-9
        )
        # velocity_sum_1h is a Float32 feature in the test repo
        assert got["velocity_sum_1h"][i] == pytest.approx(
            want["velocity_sum_1h"], rel=1e-6, abs=1e-4
        )
        assert got["velocity_count_1h__ts"][i] == want["ts"]


def test_updates_are_visible_to_feast_and_the_reader(feast_repo: Any) -> None:
    from features.online import OnlineReader

    cards, amounts, times = _events(3000, 400, seed=3)
    updater = VelocityUpdater(feast_repo.path)
    result = updater.update(cards, amounts, times)
    assert result.status == "ok" and result.rows == 3000 and result.cards == len(np.unique(cards))
    expected = _expected(cards, amounts, times)
    _check_sdk(feast_repo, expected)

    reader = OnlineReader(feast_repo.path, REFS, timeout_ms=5000)
    ids = np.array(sorted(expected))
    res = reader.read({"card_id": ids})
    # the view's TTL is 2 h: cards whose last event is older read as stale (NaN)
    age = np.array([time.time() - expected[c]["ts"] for c in ids])
    fresh, old = age < 7200 - 5, age > 7200 + 5  # clear of the boundary
    assert res.ok and res.present[fresh, 0].all() and 0 < old.sum() < len(ids)
    assert res.stale[old, 0].all() and np.isnan(res.values[old]).all()
    want = [expected[c]["velocity_count_10m"] for c in ids[fresh]]
    np.testing.assert_array_equal(res.values[fresh, 0], want)
    want = [expected[c]["velocity_sum_1h"] for c in ids[fresh]]
    np.testing.assert_allclose(res.values[fresh, 3], want, rtol=1e-6)
    reader.close()
    updater.close()


def test_batches_in_any_order_equal_one_batch(feast_repo: Any) -> None:
    cards, amounts, times = _events(1200, 60, seed=4)
    updater = VelocityUpdater(feast_repo.path, cards_per_script=7)  # many script chunks too
    # late events arrive after newer ones: batches out of time order
    order = np.random.default_rng(5).permutation(len(cards))
    for part in np.array_split(order, 5):
        assert updater.update(cards[part], amounts[part], times[part]).status == "ok"
    _check_sdk(feast_repo, _expected(cards, amounts, times))
    updater.close()


def test_window_names_and_bad_views(feast_repo: Any) -> None:
    assert parse_window("velocity_count_10m") == ("count", 600)
    assert parse_window("spend_sum_2h") == ("sum", 7200)
    assert parse_window("avg_amount") is None
    with pytest.raises(FeatureRepoError, match="not a velocity feature"):
        VelocityUpdater(feast_repo.path, view="card_history")
    with pytest.raises(FeatureRepoError, match="no view"):
        VelocityUpdater(feast_repo.path, view="nope")
    updater = VelocityUpdater(feast_repo.path)
    assert updater.update([], [], []).rows == 0
    # a NaN amount counts as an event adding 0; an event without a time is skipped
    now = time.time()
    done = updater.update([42, 42, 42], [float("nan"), 2.5, 1.0], [now, now, float("nan")])
    assert done.status == "ok" and done.rows == 2
    got = feast_repo.store.get_online_features(
        features=REFS, entity_rows=[{"card_id": 42}]
    ).to_dict()
    assert got["velocity_count_10m"] == [2] and got["velocity_sum_10m"] == [2.5]
    with pytest.raises(ValueError):
        updater.update([1, 2], [1.0], [0.0])
    updater.close()


def test_script_missing_on_the_server_is_loaded_and_the_batch_applied(feast_repo: Any) -> None:
    """A fresh (or flushed, or failed-over) Redis has no script: NOSCRIPT loads it and the
    same batch goes through once; a wrong-type key is an ``error`` result, not a raise."""
    import redis

    from features import layout
    from features.online import OnlineReader
    from stream.dev.embedded import start_redis_server

    server = start_redis_server()  # private: SCRIPT FLUSH must not touch the shared one
    try:
        updater = VelocityUpdater(feast_repo.path, redis_url=server.url, cards_per_script=50)
        cards, amounts, times = _events(600, 120, seed=8)
        assert updater.update(cards[:300], amounts[:300], times[:300]).status == "ok"
        client = redis.Redis.from_url(server.url)
        client.script_flush()
        assert updater.update(cards[300:], amounts[300:], times[300:]).status == "ok"
        expected = _expected(cards, amounts, times)
        reader = OnlineReader(feast_repo.path, REFS, server.url, timeout_ms=5000)
        ids = np.array(sorted(c for c in expected if time.time() - expected[c]["ts"] < 7000))
        res = reader.read({"card_id": ids})
        want = [expected[c]["velocity_count_1h"] for c in ids]
        np.testing.assert_array_equal(res.values[:, 2], want)  # each event counted once
        reader.close()
        bad = layout.redis_key(feast_repo.project, ["card_id"], [layout.KIND_INT64], [5])
        client.set(bad, b"not a hash")
        got = updater.update(np.array([5, 7]), np.array([1.0, 2.0]), np.array([times[0]] * 2))
        assert got.status == "error" and "WRONGTYPE" in (got.error or "")
        assert updater.update(cards[:5], amounts[:5], times[:5]).status == "ok"  # in step
        client.close()
        updater.close()
    finally:
        server.stop()
