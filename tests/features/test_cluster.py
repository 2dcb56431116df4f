"""The online reader and the velocity updater on a real Redis Cluster (3 masters, 3
replicas, started here), filled by Feast's own Redis online store in cluster mode.

Checked: the reader equals ``FeatureStore.get_online_features`` value for value; a slot
moved by hand key by key (ASK, then MOVED) and a reshard running during reads give no
wrong value; a killed master gives its rows ``unavailable`` (the others read normally),
then normal rows once its replica took over, with the same reader. Velocity updates are
replay-safe on the cluster too. The tests that kill or move things run last.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from features.exceptions import FeatureRepoError
from features.online import OnlineReader
from features.push import VelocityUpdater
from tests.features.conftest import build_repo
from tests.features.redis_cluster import LocalCluster, cluster_tools_missing
from tests.features.test_online import NUMERIC_REFS, _as_float, _rows, check_read_dict
from tests.features.test_push import REFS as VELOCITY_REFS
from tests.features.test_push import _events, _expected

pytestmark = pytest.mark.integration

Repo = Any  # tests/features/conftest.py:TestRepo (not imported: pytest would collect it)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    missing = cluster_tools_missing()
    if missing:
        pytest.skip(f"no Redis Cluster: {missing}")
    c = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cluster_repo(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Repo]:
    mp = pytest.MonkeyPatch()
    mp.delenv("REDIS_URL", raising=False)  # the repo's connection string is the one used
    path = tmp_path_factory.mktemp("crepo") / "repo"
    project = "c" + uuid.uuid4().hex[:10]
    yield build_repo(path, project, "redis://unused", n_cards=1500, n_merchants=300,
                     cluster=cluster.connection_string())
    mp.undo()


def _want_matrix(repo: Repo, cards: list[int], merchants: list[str]) -> np.ndarray:
    rows = [{"card_id": c, "merchant_id": m} for c, m in zip(cards, merchants, strict=True)]
    want = repo.store.get_online_features(features=NUMERIC_REFS, entity_rows=rows).to_dict()
    return np.column_stack([
        [_as_float(repo.vocab, ref.split(":")[1], v) for v in want[ref.split(":")[1]]]
        for ref in NUMERIC_REFS
    ])


def test_feast_wrote_to_every_master(cluster: LocalCluster, cluster_repo: Repo) -> None:
    sizes = [cluster.client(p).dbsize() for p in cluster.masters_ports()]
    assert len(sizes) == 3 and min(sizes) > 100, sizes


def test_reader_equals_feast_on_the_cluster(cluster_repo: Repo) -> None:
    check_read_dict(cluster_repo, 1200, seed=1)
    reader = OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=5000)
    for n in (1, 10, 100, 1000):  # the dict path (small) and the numpy path (large)
        cards, merchants = _rows(cluster_repo, n, seed=n)
        res = reader.read({"card_id": np.array(cards), "merchant_id": merchants})
        assert res.status == "ok", res.error
        np.testing.assert_array_equal(res.values, _want_matrix(cluster_repo, cards, merchants))
        known = np.isin(cards, cluster_repo.card_ids)
        np.testing.assert_array_equal(res.present[:, 0], known)
    reader.close()


def test_key_serialization_version_is_checked(tmp_path: Path, redis_url: str) -> None:
    from tests.features.conftest import _write_yaml

    _write_yaml(tmp_path, "kv", redis_url)
    text = (tmp_path / "feature_store.yaml").read_text()
    (tmp_path / "feature_store.yaml").write_text(
        text.replace("entity_key_serialization_version: 3", "entity_key_serialization_version: 2")
    )
    with pytest.raises(FeatureRepoError, match="entity_key_serialization_version 2"):
        OnlineReader(tmp_path, ["card_history:avg_amount"])
    with pytest.raises(FeatureRepoError, match="entity_key_serialization_version 2"):
        VelocityUpdater(tmp_path)


def test_velocity_on_the_cluster_is_routed_and_replay_safe(cluster_repo: Repo) -> None:
    cards, amounts, times = _events(3000, 400, seed=3)
    updater = VelocityUpdater(cluster_repo.path, cards_per_script=8)
    assert updater.state_field == b"_vstate:card_velocity"
    offsets = np.arange(len(cards))
    parts = offsets % 3
    res = updater.update(cards, amounts, times, topics="in", partitions=parts, offsets=offsets)
    assert res.status == "ok" and res.rows == 3000 and res.cards == len(np.unique(cards))
    # the whole input again, then an overlapping half: nothing more counted
    again = updater.update(cards, amounts, times, topics="in", partitions=parts, offsets=offsets)
    assert again.status == "ok" and again.rows == 0 and again.skipped == 3000
    half = slice(1000, 2500)
    assert updater.update(cards[half], amounts[half], times[half], topics="in",
                          partitions=parts[half], offsets=offsets[half]).rows == 0
    expected = _expected(cards, amounts, times)
    ids = sorted(expected)
    got = cluster_repo.store.get_online_features(
        features=VELOCITY_REFS, entity_rows=[{"card_id": c} for c in ids]
    ).to_dict()
    for name in ("velocity_count_10m", "velocity_count_1h"):
        assert got[name] == [expected[c][name] for c in ids], name
    np.testing.assert_allclose(got["velocity_sum_10m"],
                               [expected[c]["velocity_sum_10m"] for c in ids], rtol=1e-12)
    updater.close()


def _master_of(cluster: LocalCluster, key: bytes) -> tuple[int, int]:
    """(slot, port of the master serving it) for a key."""
    client = cluster.client(cluster.masters_ports()[0])
    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
    for lo, hi, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return slot, int(master[1])
    raise AssertionError("slot not served")


def test_a_slot_moved_key_by_key_reads_no_wrong_value(
    cluster: LocalCluster, cluster_repo: Repo
) -> None:
    """Between every step of a hand-made migration (IMPORTING/MIGRATING, MIGRATE of each
    key, SETSLOT NODE) the reader answers, equal to the SDK: ASK while keys are split
    between the two nodes, MOVED once the slot changed hands."""
    reader = OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=5000)
    cards, merchants = _rows(cluster_repo, 300, seed=5)
    want = _want_matrix(cluster_repo, cards, merchants)
    key = reader._groups[0].key_fn(cards[0])  # a known card's Feast hash
    slot, source = _master_of(cluster, key)
    target = next(p for p in cluster.masters_ports() if p != source)
    src, dst = cluster.client(source), cluster.client(target)
    src_id = src.execute_command("CLUSTER", "MYID").decode()
    dst_id = dst.execute_command("CLUSTER", "MYID").decode()

    def check() -> None:
        res = reader.read({"card_id": np.array(cards), "merchant_id": merchants})
        assert res.status == "ok", res.error
        np.testing.assert_array_equal(res.values, want)

    check()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    assert key in keys
    for k in keys:
        src.execute_command("MIGRATE", "127.0.0.1", target, k, 0, 5000)
        check()
    for port in cluster.masters_ports():
        cluster.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    check()
    assert _master_of(cluster, key)[1] == target
    check()
    reader.close()


def test_reads_during_a_reshard_give_no_wrong_value(
    cluster: LocalCluster, cluster_repo: Repo
) -> None:
    reader = OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=2000)
    cards, merchants = _rows(cluster_repo, 400, seed=6)
    want = _want_matrix(cluster_repo, cards, merchants)
    masters = cluster.masters_ports()
    ids = {p: cluster.client(p).execute_command("CLUSTER", "MYID").decode() for p in masters}
    reshard = subprocess.Popen(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{masters[0]}",
         "--cluster-from", ids[masters[1]], "--cluster-to", ids[masters[2]],
         "--cluster-slots", "300", "--cluster-yes", "--cluster-pipeline", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    reads = ok = 0
    try:
        while reshard.poll() is None or reads < 5:
            res = reader.read({"card_id": np.array(cards), "merchant_id": merchants})
            reads += 1
            fine = np.ones(len(cards), bool) if res.unavailable is None else ~res.unavailable
            assert res.status in ("ok", "partial"), res.error
            np.testing.assert_array_equal(res.values[fine], want[fine])
            ok += res.status == "ok"
    finally:
        reshard.wait(120)
    assert reshard.returncode == 0 and ok > 0, (reshard.returncode, reads, ok)
    reader.close()


def _diag(cluster: LocalCluster, reader: Any) -> Any:
    out = []
    for p in cluster.live_ports():
        try:
            slots = cluster.client(p).execute_command("CLUSTER", "SLOTS")
            out.append((p, [(s[0], s[1], s[2][1]) for s in slots]))
        except redis.RedisError as exc:
            out.append((p, str(exc)))
    cmap = reader._cluster.cmap
    own = np.unique(cmap.owner, return_counts=True)
    return out, [(n.addr, n.breaker.state) for n in cmap.nodes], own, cmap.stale


def test_a_killed_master_degrades_its_rows_until_the_replica_takes_over(
    cluster: LocalCluster, cluster_repo: Repo
) -> None:
    reader = OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=200)
    updater = VelocityUpdater(cluster_repo.path, timeout_ms=200)
    cards, merchants = _rows(cluster_repo, 500, seed=8)
    want = _want_matrix(cluster_repo, cards, merchants)
    entities = {"card_id": np.array(cards), "merchant_id": merchants}
    reader.read(entities)  # warm (compiled passes loaded)
    assert reader.read(entities).status == "ok"
    victim = cluster.masters_ports()[0]
    cluster.kill(victim)
    res = reader.read(entities)
    assert res.status == "partial" and res.unavailable is not None, res.error
    assert 0 < res.unavailable.sum() < len(cards)
    np.testing.assert_array_equal(res.values[~res.unavailable], want[~res.unavailable])
    assert np.isnan(res.values[res.unavailable]).all() and not res.present[res.unavailable].any()
    times = np.full(len(cards), time.time())
    partial = updater.update(cards, np.ones(len(cards)), times)
    assert partial.status == "partial" and 0 < partial.rows < len(cards)
    end = time.monotonic() + 60
    while time.monotonic() < end:  # the replica is promoted after the node timeout (1 s)
        res = reader.read(entities)
        if res.status == "ok":
            break
        time.sleep(0.1)
    assert res.status == "ok", (res.error, victim, _diag(cluster, reader))
    np.testing.assert_array_equal(res.values, want)
    assert victim not in cluster.masters_ports()
    # the updater learns the new map from its own failed attempt, like the reader
    statuses = [updater.update(cards, np.ones(len(cards)), times).status for _ in range(3)]
    assert statuses[-1] == "ok", statuses
    reader.close()
    updater.close()


def test_a_lost_cluster_gives_unavailable(cluster: LocalCluster, cluster_repo: Repo) -> None:
    reader = OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=200)
    entities = {"card_id": np.array(cluster_repo.card_ids[:50]), "merchant_id": ["m"] * 50}
    assert reader.read(entities).status == "ok"
    stopper = threading.Thread(target=cluster.stop)
    stopper.start()
    stopper.join(30)
    res = reader.read(entities)
    assert res.status == "unavailable" and np.isnan(res.values).all()
    reader.close()
    with pytest.raises(redis.ConnectionError):
        OnlineReader(cluster_repo.path, NUMERIC_REFS, timeout_ms=200)
