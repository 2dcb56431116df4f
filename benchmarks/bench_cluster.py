"""Redis Cluster: the fast reader vs the Feast SDK, and velocity updates on 1 vs 3 masters.

Starts real clusters on loopback (``redis-server --cluster-enabled yes``; 3 masters, and
1 master holding every slot), fills a Feast repo through Feast's own Redis online store
in cluster mode, then measures, interleaved in one run:

* reads of 1, 10, 100 and 1,000 entities (card, merchant and card-merchant views):
  ``OnlineReader.read`` and ``FeatureStore.get_online_features(...).to_dict()``, median
  and p99 wall time per call (after checking the reader returns the SDK's values);
* ``VelocityUpdater.update`` rows/s on the 1-master and the 3-master cluster and on one
  plain Redis, with offsets (replay-safe) in batches of 512 events over 20,000 cards.

Run: ``python -m benchmarks.bench_cluster [--quick]``. Prints a table; the load average
is printed with it (the numbers mean little on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _timed(fn: Any, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * (len(times) - 1))] * 1e3


def _velocity(repo: Path, url: str | None, batches: int) -> float:
    from features.push import VelocityUpdater

    updater = VelocityUpdater(repo, redis_url=url, timeout_ms=5000)
    rng = np.random.default_rng(1)
    n = 512
    now = time.time()
    total = 0
    t0 = time.perf_counter()
    for b in range(batches):
        cards = rng.integers(1, 20_001, n).astype(np.int64)
        res = updater.update(cards, rng.gamma(2, 30, n), now - rng.random(n) * 600,
                             topics="bench", partitions=np.zeros(n, np.int64),
                             offsets=np.arange(b * n, (b + 1) * n))
        assert res.status == "ok", res.error
        total += res.rows
    rate = total / (time.perf_counter() - t0)
    updater.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    from features.online import OnlineReader
    from tests.features.conftest import build_repo
    from tests.features.redis_cluster import LocalCluster
    from tests.features.test_online import NUMERIC_REFS, _rows

    repeats = 30 if args.quick else 200
    batches = 20 if args.quick else 100
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    three = LocalCluster(work / "three", masters=3, replicas=0).start()
    one = LocalCluster(work / "one", masters=1, replicas=0).start()
    try:
        repo = build_repo(work / "repo", "b" + uuid.uuid4().hex[:8], "redis://unused",
                          n_cards=5000, n_merchants=1000, cluster=three.connection_string())
        reader = OnlineReader(repo.path, NUMERIC_REFS, timeout_ms=5000)
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        print("entities  reader p50/p99 ms   SDK p50/p99 ms   SDK/reader (p50)")
        for n in (1, 10, 100, 1000):
            cards, merchants = _rows(repo, n, seed=n)
            entities = {"card_id": np.array(cards), "merchant_id": merchants}
            rows = [{"card_id": c, "merchant_id": m} for c, m in zip(cards, merchants, strict=True)]
            got = reader.read_dict(rows)
            want = repo.store.get_online_features(features=NUMERIC_REFS, entity_rows=rows)
            assert got == want.to_dict(), "reader and SDK differ"
            reader.read(entities)
            r = _timed(lambda e=entities: reader.read(e), repeats)
            s = _timed(lambda r_=rows: repo.store.get_online_features(
                features=NUMERIC_REFS, entity_rows=r_).to_dict(), max(10, repeats // 4))
            print(f"{n:8d}  {r[0]:8.3f} / {r[1]:7.3f}   {s[0]:7.2f} / {s[1]:7.2f}"
                  f"   {s[0] / r[0]:8.1f}x")
        reader.close()
        rates = {}
        for name, cluster in (("3 masters", three), ("1 master", one)):
            cdir = build_repo(work / f"v{name[0]}", "v" + uuid.uuid4().hex[:8], "redis://unused",
                              n_cards=10, n_merchants=10, cluster=cluster.connection_string()).path
            rates[name] = _velocity(cdir, None, batches)
        print("velocity rows/s (batches of 512, offsets given): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
        print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    finally:
        three.stop()
        one.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
