"""``streamscore bench features``: the fast online reader vs the Feast SDK and bare HMGETs.

Sets up a private copy of the fraud Feast repo (own project, so own Redis keys) on the
real Redis, fills ``card_history`` and ``merchant_risk`` through Feast's own write path,
then at 1, 10, 100 and 1,000 entities x every feature of both views measures, interleaved
in the same run:

* ``sdk``   - ``FeatureStore.get_online_features(...).to_dict()`` (the reference);
* ``fast``  - ``OnlineReader.read`` (keys, one pipelined round trip, decode to float64);
* ``floor`` - a bare redis-py pipeline of the same HMGETs, keys prebuilt, no decoding;
* ``raw``   - the same HMGETs prepacked as one RESP buffer on one connection, no decoding
  (the transport ``fast`` itself uses, i.e. its own floor).

Reports median and p99 wall latency and mean CPU time per call, ratios, streaming
velocity updates (``VelocityUpdater``) vs Feast's ``push`` in rows/s, and the updates'
cost inside Redis (``benchmarks.velocity_redis``; ``--velocity-only`` runs that alone). Writes
``features.json`` and ``features.png`` into ``--out``. Before timing, it checks that the
fast reader returns the SDK's values for the benchmark's entities.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import velocity_redis

__all__ = ["add_arguments", "run"]

SIZES = (1, 10, 100, 1000)
VIEWS = ("card_history", "merchant_risk")
METHODS = ("sdk", "fast", "floor", "raw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``streamscore bench features`` (no heavy imports here)."""
    parser.add_argument("--quick", action="store_true", help="fewer repeats (~1 min)")
    parser.add_argument("--out", default="benchmarks/out", metavar="PATH", help="report directory")
    parser.add_argument(
        "--redis-url", default=None, metavar="URL",
        help="Redis to use (default REDIS_URL, else 127.0.0.1:6379)",
    )
    parser.add_argument("--cards", type=int, default=20000, metavar="N",
                        help="cards written to Redis")
    parser.add_argument("--merchants", type=int, default=2000, metavar="N",
                        help="merchants written")
    parser.add_argument(
        "--velocity-only",
        action="store_true",
        help="only the Redis-side cost of velocity updates (private redis-server)",
    )
    parser.add_argument(
        "--velocity-push",
        default=None,
        metavar="PATH",
        help="measure this version of features/push.py instead (before/after runs)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="calls per method and size (default 400, --quick 80; 1/8 of it at 1,000)",
    )


def _fill(store: Any, view: Any, keys: Any, vocab: dict[str, list[str]], seed: int) -> None:
    """Random rows of every feature type of ``view`` written through Feast's own path."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = len(keys)
    now = datetime.now(UTC)
    df: dict[str, Any] = {view.entity_columns[0].name: keys}
    for f in view.features:
        kind = f.dtype.to_value_type().name
        if kind in ("DOUBLE", "FLOAT"):
            col = rng.gamma(2.0, 20.0, n)
            col[rng.random(n) < 0.05] = np.nan
            df[f.name] = col.astype(np.float32 if kind == "FLOAT" else np.float64)
        elif kind in ("INT32", "INT64"):
            df[f.name] = rng.integers(0, 5000, n).astype(np.int32 if kind == "INT32" else np.int64)
        elif kind == "BOOL":
            df[f.name] = rng.random(n) < 0.2
        elif kind == "STRING":
            values = vocab.get(f.name) or ["x"]
            df[f.name] = rng.choice(values, n)
        elif kind == "UNIX_TIMESTAMP":
            df[f.name] = pd.to_datetime(rng.integers(1.5e9, 1.7e9, n), unit="s", utc=True)
        else:
            raise SystemExit(f"bench features: unexpected type {kind} of {view.name}:{f.name}")
    df["event_timestamp"] = [now - timedelta(seconds=int(s)) for s in rng.integers(0, 3600, n)]
    df["created"] = now  # the repo's sources declare a created-timestamp column
    store.write_to_online_store(view.name, pd.DataFrame(df))


def _time_calls(fn: Any) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in METHODS:
        xs = [r["entities"] for r in report["results"]]
        ax1.plot(xs, [r[method]["median_ms"] for r in report["results"]], marker="o", label=method)
        ax2.plot(xs, [r[method]["p99_ms"] for r in report["results"]], marker="o", label=method)
    for ax, title in ((ax1, "median latency"), (ax2, "p99 latency")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entities per call (x all features of 2 views)")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"online feature reads - {report['features']} features, load {report['load']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _push_bench(repo: Path, store: Any, url: str, quick: bool) -> dict[str, float]:
    """Velocity updates: VelocityUpdater vs Feast's push of the same kind of rows, rows/s.

    Interleaved in rounds (updater: two worker-sized batches of 2,000 events; push: 1,000
    rows) so both see the same machine load. Besides wall-clock rows/s it reports rows per
    CPU-second (this process + the Redis server, from ``INFO cpu``), which does not depend
    on how much of the shared cores the run got; other clients of the same Redis can only
    inflate the server share, so that figure errs low.
    """
    import numpy as np
    import pandas as pd
    import redis
    from feast.data_source import PushMode

    from features.push import VelocityUpdater

    rng = np.random.default_rng(11)
    rounds = 5 if quick else 20
    n = rounds * 4000
    cards = rng.integers(1, 50000, n).astype(np.int64)
    amounts = np.round(rng.gamma(2.0, 30.0, n), 2)
    times = time.time() - rng.random(n) * 3600
    updater = VelocityUpdater(repo, redis_url=url)
    updater.update(cards[:100], amounts[:100], times[:100])  # load the script
    client = redis.Redis.from_url(url)

    def cpu() -> float:  # this process + the Redis server, seconds
        info = client.info("cpu")
        return time.process_time() + info["used_cpu_user"] + info["used_cpu_sys"]

    ours = feast = ours_cpu = feast_cpu = 0.0
    pushed = failed = 0
    for r in range(rounds):
        t0, c0 = time.perf_counter(), cpu()
        for lo in (r * 4000, r * 4000 + 2000):
            done = updater.update(
                cards[lo : lo + 2000], amounts[lo : lo + 2000], times[lo : lo + 2000]
            )
            failed += done.status != "ok"
        ours += time.perf_counter() - t0
        ours_cpu += cpu() - c0
        lo = r * 1000
        df = pd.DataFrame(
            {
                # cards the updater never wrote, at fresh times: Feast skips rows older than
                # what a key already holds, which would spare it the writes
                "card_id": cards[lo : lo + 1000] + 10_000_000,
                "velocity_count_10m": rng.integers(0, 9, 1000).astype(np.int64),
                "velocity_sum_10m": amounts[lo : lo + 1000],
                "velocity_count_1h": rng.integers(0, 30, 1000).astype(np.int64),
                "velocity_sum_1h": amounts[lo : lo + 1000] * 3,
                "event_timestamp": pd.to_datetime(
                    time.time() - rng.random(1000) * 60, unit="s", utc=True
                ),
            }
        )
        t0, c0 = time.perf_counter(), cpu()
        store.push("card_velocity_push", df, to=PushMode.ONLINE)
        feast += time.perf_counter() - t0
        feast_cpu += cpu() - c0
        pushed += 1000
    updater.close()
    client.close()
    return {
        "velocity_updater_rows_per_cpu_s": n / ours_cpu,
        "feast_push_rows_per_cpu_s": pushed / feast_cpu,
        "velocity_updater_rows_per_s": n / ours,
        "feast_push_rows_per_s": pushed / feast,
        "ratio": (n / ours) / (pushed / feast),
        "updater_rows": n,
        "push_rows": pushed,
        "updater_failed_batches": failed,
    }


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print a table and write features.json / features.png."""
    import numpy as np
    import redis
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from features.materialize import apply_repo
    from features.online import OnlineReader
    from features.repo import delete_project_keys, load_vocab, open_store, prepare_repo

    # a wide table even when piped into a file (rich assumes 80 columns there)
    console = Console(width=None if sys.stdout.isatty() else 160)
    url = args.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    repeats = args.repeats or (80 if args.quick else 400)
    project = "bench_" + uuid.uuid4().hex[:8]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare_repo("fraud", tmp, project=project, redis_url=url)
        try:
            apply_repo(repo, url)
            if args.velocity_only:
                velocity = velocity_redis.measure(repo, args.quick, args.velocity_push)
                (out / "velocity.json").write_text(json.dumps(velocity, indent=2) + "\n")
                _print_velocity(console, velocity)
                return 0
            store = open_store(repo, url)
            vocab = load_vocab(repo)
            views = {v.name: v for v in store.list_feature_views()}
            rng = np.random.default_rng(0)
            card_ids = rng.choice(10**9, args.cards, replace=False).astype(np.int64)
            merchant_ids = [f"M{i:07d}" for i in rng.choice(10**7, args.merchants, replace=False)]
            with console.status("writing online rows through Feast"):
                _fill(store, views["card_history"], card_ids, vocab, 1)
                _fill(store, views["merchant_risk"], merchant_ids, vocab, 2)
            refs = [f"{v}:{f.name}" for v in VIEWS for f in views[v].features]
            reader = OnlineReader(repo, refs, url, timeout_ms=10000)
            client = redis.Redis.from_url(url)
            report = _measure(
                store, reader, client, refs, card_ids, merchant_ids, repeats, track, rng
            )
            report["push"] = _push_bench(repo, store, url, args.quick)
            report["velocity_redis"] = velocity_redis.measure(repo, args.quick, args.velocity_push)
            reader.close()
            client.close()
        finally:
            delete_project_keys(url, project)
    load = os.getloadavg()
    report.update(
        features=len(refs),
        load=f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        cpus=os.cpu_count(),
        repeats=repeats,
        redis=url.split("@")[-1],
    )
    (out / "features.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "features.png")

    table = Table(
        title=f"online reads, {len(refs)} features of {', '.join(VIEWS)} (load {report['load']})"
    )
    table.add_column("entities", justify="right")
    for m in METHODS:
        table.add_column(f"{m} med/p99 ms", justify="right")
    table.add_column("cpu ms sdk/fast/floor", justify="right")
    table.add_column("sdk/fast", justify="right")
    table.add_column("fast/floor", justify="right")
    table.add_column("fast/raw", justify="right")
    for r in report["results"]:
        table.add_row(
            str(r["entities"]),
            *[f"{r[m]['median_ms']:.3f}/{r[m]['p99_ms']:.3f}" for m in METHODS],
            "/".join(f"{r[m]['cpu_ms']:.2f}" for m in ("sdk", "fast", "floor")),
            f"{r['sdk_over_fast']:.1f}x",
            f"{r['fast_over_floor']:.2f}",
            f"{r['fast_over_raw']:.2f}",
        )
    console.print(table)
    p = report["push"]
    console.print(
        f"velocity updates: {p['velocity_updater_rows_per_s']:,.0f} rows/s "
        f"vs Feast push {p['feast_push_rows_per_s']:,.0f} rows/s ({p['ratio']:.1f}x)"
        + (
            f", {p['updater_failed_batches']} batches timed out"
            if p["updater_failed_batches"]
            else ""
        )
        + f"; per CPU-second (this process + Redis): {p['velocity_updater_rows_per_cpu_s']:,.0f}"
        f" vs {p['feast_push_rows_per_cpu_s']:,.0f}"
    )
    _print_velocity(console, report["velocity_redis"])
    at100 = next(r for r in report["results"] if r["entities"] == 100)
    ok = at100["sdk_over_fast"] >= 5 and at100["fast_over_floor"] <= 1.5
    console.print(
        f"targets at 100 entities: >=5x faster than the SDK ({at100['sdk_over_fast']:.1f}x), "
        f"<=1.5x the bare HMGET ({at100['fast_over_floor']:.2f}x): "
        + ("[green]met[/green]" if ok else "[red]missed[/red]")
    )
    console.print(f"wrote {out / 'features.json'} and {out / 'features.png'}")
    return 0


def _print_velocity(console: Any, velocity: dict[str, Any]) -> None:
    """The Redis-side velocity table (``benchmarks.velocity_redis``)."""
    from rich.table import Table

    if "skipped" in velocity:
        console.print(f"velocity in Redis: skipped ({velocity['skipped']})")
        return
    table = Table(title=f"velocity updates inside Redis ({velocity['push']})")
    for col in (
        "scenario", "card updates", "cards/script", "Redis CPU us/card", "script p50/p99/max ms",
        "client CPU us/event", "GETs > 20 ms (p99/max ms)", "load 1 min",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for name in velocity_redis.SCENARIOS:
        r = velocity[name]
        table.add_row(
            name,
            f"{r['card_updates']:,}",
            str(r["cards_per_script"]),
            f"{r['redis_cpu_us_per_card']:.1f}",
            f"{r['script_p50_ms']:.2f}/{r['script_p99_ms']:.2f}/{r['script_max_ms']:.2f}",
            f"{r['client_cpu_us_per_event']:.2f}",
            f"{r['probe_over_20ms']}/{r['probe_reads']} "
            f"({r['probe_p99_ms']:.1f}/{r['probe_max_ms']:.1f})",
            r["load"].split()[0],
        )
    console.print(table)


def _measure(
    store: Any,
    reader: Any,
    client: Any,
    refs: list[str],
    card_ids: Any,
    merchant_ids: list[str],
    repeats: int,
    track: Any,
    rng: Any,
) -> dict[str, Any]:
    import numpy as np

    from features import layout

    results = []
    for n in SIZES:
        cards = rng.choice(card_ids, n)
        merchants = [str(m) for m in rng.choice(merchant_ids, n)]
        rows = [
            {"card_id": int(c), "merchant_id": m} for c, m in zip(cards, merchants, strict=True)
        ]
        entities = {"card_id": cards, "merchant_id": merchants}
        # the benchmarked path gives the reference answers
        want = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        if reader.read_dict(rows) != want:
            raise SystemExit("bench features: the fast reader disagrees with get_online_features")
        got = reader.read(entities)
        assert got.ok and got.present.all()
        # the floors: the same unique keys and fields, prebuilt, no decoding
        plans = []
        for group in reader._groups:  # views with the same join keys share a hash
            keys = {
                layout.redis_key(
                    reader.project, group.join_keys, group.kinds, [e[k] for k in group.join_keys]
                )
                for e in rows
            }
            fields = [f for j in group.views for f in reader._views[j].fields]
            plans.append((list(keys), fields))
        packed = b"".join(reader._group_keys(g, entities, n)[0] for g in reader._groups)
        count = sum(len(k) for k, _ in plans)

        def floor(plans: list[Any] = plans) -> None:
            pipe = client.pipeline(transaction=False)
            for keys, fields in plans:
                for key in keys:
                    pipe.hmget(key, fields)
            pipe.execute()

        def raw(packed: bytes = packed, count: int = count) -> None:
            reader._roundtrip(packed, reader._channel.objects, count)

        calls = {
            "sdk": lambda rows=rows: store.get_online_features(
                features=refs, entity_rows=rows
            ).to_dict(),
            "fast": lambda entities=entities: reader.read(entities),
            "floor": floor,
            "raw": raw,
        }
        wall: dict[str, list[float]] = {m: [] for m in METHODS}
        cpu: dict[str, list[float]] = {m: [] for m in METHODS}
        for m in METHODS:  # warm-up
            for _ in range(5):
                calls[m]()
        # Interleaved so every method sees the same machine load, in a shuffled order
        # each round: on a busy box the call right after a CPU-heavy one (the SDK) is the
        # one most likely to lose its time slice, and that must not always be the same one.
        gc.collect()
        gc.freeze()  # long-lived objects of Feast/pandas out of the collector's way
        # at 1,000 entities one SDK call takes ~0.5 s: fewer rounds keep the run short
        rounds = repeats if n < 1000 else max(20, repeats // 8)
        for _ in track(range(rounds), description=f"{n:>5} entities", transient=True):
            for m in rng.permutation(METHODS):
                w, c = _time_calls(calls[m])
                wall[m].append(w)
                cpu[m].append(c)
        row: dict[str, Any] = {"entities": n, "rounds": rounds}
        for m in METHODS:
            arr = np.array(wall[m]) * 1e3
            row[m] = {
                "median_ms": float(np.median(arr)),
                "p99_ms": float(np.percentile(arr, 99)),
                "cpu_ms": float(np.mean(cpu[m]) * 1e3),
            }
        row["sdk_over_fast"] = row["sdk"]["median_ms"] / row["fast"]["median_ms"]
        row["fast_over_floor"] = row["fast"]["median_ms"] / row["floor"]["median_ms"]
        row["fast_over_raw"] = row["fast"]["median_ms"] / row["raw"]["median_ms"]
        results.append(row)
    return {"results": results, "refs": refs}
