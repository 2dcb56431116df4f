"""``streamscore bench core``: CPU per event of the Kafka-free batch core, stage by stage.

Builds the real pipeline once (``benchmarks.workspace``: generated data, the Feast repo
with its rows online in Redis, the trained champion; ``stream.core.assembly.build_stages``:
compiled model, online reader, request features, ``BatchCore``), makes a fixed list of
encoded events with the load generator (``benchmarks.loadgen``: hot keys, unknown
entities, a few malformed payloads), then times ``BatchCore.process`` over that list in
batches of 64, 512 and 4096, several repeats, as the worker calls it (keys, sources,
producer timestamps). No Kafka anywhere.

Reported per event: the core's CPU time (this thread), the CPU inside the compiled
scoring kernel (``predict``) and the reason-code kernel (``contributions``) and inside
the online read, measured by thin timing wrappers, plus the stage split
``BatchResult.stage_s`` gives (read on the thread's CPU clock during the run). "core
excl. kernels" = total CPU - predict -
contributions: the number the issue's target (<= 4 us/event at batch 4096) is about.
Prints a table and writes ``core.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "measure", "run"]

PIPELINES = ("fraud", "pricing")
STAGES = ("decode", "features", "score", "policy", "explain", "encode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``streamscore bench core`` (no heavy imports here)."""
    parser.add_argument("--pipeline", choices=[*PIPELINES, "all"], default="all",
                        help="which pipeline's core to time (default all)")
    parser.add_argument("--batches", default="64,512,4096", metavar="LIST",
                        help="comma-separated batch sizes (default 64,512,4096)")
    parser.add_argument("--events", type=int, default=4096, metavar="N",
                        help="encoded events in the fixed list (default 4096)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="passes over the list per batch size (default 7, --quick 3)")
    parser.add_argument("--size", choices=("tiny", "quick", "full"), default="quick",
                        help="workspace data size (default quick)")
    parser.add_argument("--workspace", default=None, metavar="PATH",
                        help="workspace root (default $STREAMSCORE_HOME/bench/core)")
    parser.add_argument("--redis-url", default="", metavar="URL",
                        help="Redis (default: resolve as the "
                        "worker does, else start one)")
    parser.add_argument("--against", default=None, metavar="PATH",
                        help="also time the BatchCore of another stream/core/pipeline.py (e.g. "
                             "git show REV:stream/core/pipeline.py > old.py), alternating runs")
    parser.add_argument("--review-above", type=float, default=None, metavar="SCORE",
                        help="fraud: review from this score on (default: the pipeline's), "
                             "to time reason codes on more adverse decisions")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (make bench)")
    parser.add_argument("--out", default="benchmarks/out", metavar="PATH", help="report directory")


class _Timed:
    """Wraps a scorer or reader; adds the CPU time of the named methods to ``spent``."""

    def __init__(self, inner: Any, methods: tuple[str, ...]) -> None:
        self._inner = inner
        self.spent = dict.fromkeys(methods, 0.0)
        for name in methods:
            setattr(self, name, self._wrap(name, getattr(inner, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        cpu = time.thread_time
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += cpu() - t

        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def reset(self) -> None:
        for k in self.spent:
            self.spent[k] = 0.0


class _CpuClock:
    """Stands in for ``time`` inside ``stream.core.pipeline``: perf_counter reads thread CPU."""

    perf_counter = staticmethod(time.thread_time)
    time = staticmethod(time.time)


def _builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def _stages(pipeline: str, ws: Any, redis_url: str) -> Any:
    from benchmarks.workspace import write_pipeline_file
    from stream.config import load_pipeline
    from stream.core.assembly import build_stages

    path = write_pipeline_file(ws, ws.root / "pipeline-core.yaml", bootstrap="127.0.0.1:9",
                               topics={}, group="bench-core", metrics_port=9464,
                               # CPU is measured here, not Redis latency: a read timing out
                               # on a busy box would time the degraded path instead.
                               features_timeout_ms=2000)
    return build_stages(load_pipeline(path), redis_url=redis_url, worker_id="bench-core")


def _load_core_module(path: str) -> Any:
    """Another version of ``stream/core/pipeline.py``.

    For example ``git show REV:stream/core/pipeline.py``.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_core_against", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def measure(pipeline: str, ws: Any, redis_url: str, *, batches: list[int], events: int = 4096,
            repeats: int = 7, against: str | None = None,
            review_above: float | None = None) -> dict[str, Any]:
    """Time the core of ``pipeline`` over ``events`` fixed events per batch size.

    ``against``: a path to another ``pipeline.py``; its ``BatchCore``, built on the same
    model, reader and request features, is timed in alternation with this one (same
    machine load for both) and reported under ``against``.
    """
    import stream.core.pipeline as pipeline_mod
    from benchmarks.loadgen import EventFactory
    from stream.core.pipeline import LoadedModel

    st = _stages(pipeline, ws, redis_url)
    core = st.core
    if review_above is not None and pipeline == "fraud":
        import msgspec

        policy = msgspec.structs.replace(core.config.policy, review_above=review_above)
        core.config = msgspec.structs.replace(core.config, policy=policy)
    m = core.model
    scorer = _Timed(m.scorer, ("predict", "contributions"))
    core.set_model(LoadedModel(m.name, m.version, m.sha256, scorer, m.reference))
    reader = _Timed(core.reader, ("read",))
    core.reader = reader
    cores: dict[str, tuple[Any, Any]] = {"core": (core, pipeline_mod)}
    if against:
        other = _load_core_module(against)
        optional = [v for v, req in zip(core.views, core._required_views, strict=True)
                    if not req]
        cores["against"] = (other.BatchCore(
            core.config, other.LoadedModel(m.name, m.version, m.sha256, scorer, m.reference),
            reader=reader, request=core.request, online_names=core.online_names,
            optional_views=optional, challenger=core.challenger, worker_id=core.worker_id,
        ), other)
    # The stage split of BatchResult.stage_s in CPU seconds of this thread: on a shared
    # box, preemption inflates wall-clock stages far more than the work in them.
    for _, module in cores.values():
        module.time = _CpuClock()
    factory = EventFactory.from_data_dir(pipeline, ws.data_dir, seed=7)
    eb = factory.make(events, f"core-{pipeline}-")
    payloads, keys = eb.payloads, eb.keys
    sources = [("in", i % 4, 1000 + i) for i in range(events)]
    out: dict[str, Any] = {"pipeline": pipeline, "events": events, "good": eb.good,
                           "malformed": eb.malformed, "model": f"{m.name}@{m.version}",
                           "features": len(m.feature_names), "batches": {},
                           "policy": _builtins(core.config.policy)}
    if against:
        out["against"] = {"path": against, "batches": {}}
    cpu, wall = time.thread_time, time.perf_counter

    def one_pass(c: Any, spans: list[tuple[int, int]]) -> dict[str, float]:
        stage = dict.fromkeys(STAGES, 0.0)
        scorer.reset()
        reader.reset()
        decisions = degraded = faults = 0
        t_cpu, t_wall = cpu(), wall()
        for s, e in spans:
            stamp = time.time() - 0.002  # fresh: no event is over the budget
            res = c.process(payloads[s:e], keys=keys[s:e], sources=sources[s:e],
                            timestamps=[stamp] * (e - s))
            decisions += len(res.decisions)
            degraded += res.n_degraded
            faults += res.online_status != "ok"
            for k, v in res.stage_s.items():
                stage[k] = stage.get(k, 0.0) + v
        total = cpu() - t_cpu
        per = 1e6 / events
        row = {"cpu_us": total * per, "wall_us": (wall() - t_wall) * per,
               "predict_us": scorer.spent["predict"] * per,
               "contrib_us": scorer.spent["contributions"] * per,
               "read_us": reader.spent["read"] * per, "decisions": decisions,
               "degraded": degraded, "online_faults": faults}
        row["core_us"] = row["cpu_us"] - row["predict_us"] - row["contrib_us"]
        row["core_excl_read_us"] = row["core_us"] - row["read_us"]
        row.update({f"{k}_cpu_us": v * per for k, v in stage.items()})
        return row

    for b in batches:
        spans = [(s, min(s + b, events)) for s in range(0, events, b)]
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in cores}
        for c, _ in cores.values():
            one_pass(c, spans)  # warm-up: caches, first-call costs
        for _ in range(repeats):
            for name, (c, _) in cores.items():
                runs[name].append(one_pass(c, spans))
        for name, rows in runs.items():
            med: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            med["core_us_min"] = min(r["core_us"] for r in rows)
            med["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            (out["batches"] if name == "core" else out["against"]["batches"])[str(b)] = med
    for _, module in cores.values():
        module.time = time
    st.close()
    return out


def _table(result: dict[str, Any]) -> str:
    head = (f"{'pipeline':8} {'batch':>5} {'cpu':>6} {'kernel':>6} {'shap':>6} {'read':>6} "
            f"{'core':>6} {'c-read':>6} | " + " ".join(f"{s[:6]:>6}" for s in STAGES))
    lines = ["us per event (median of repeats); cpu = this thread's CPU in process(); "
             "core = cpu - kernel - shap; c-read = core - online read CPU; "
             "stages = CPU", head]
    rows = [(p["pipeline"], b, r) for p in result["pipelines"] for b, r in p["batches"].items()]
    rows += [(p["pipeline"] + "*", b, r) for p in result["pipelines"]
             for b, r in p.get("against", {}).get("batches", {}).items()]
    for name, b, r in rows:
        lines.append(
            f"{name:8} {b:>5} {r['cpu_us']:6.2f} {r['predict_us']:6.2f} "
            f"{r['contrib_us']:6.2f} {r['read_us']:6.2f} {r['core_us']:6.2f} "
            f"{r['core_excl_read_us']:6.2f} | "
            + " ".join(f"{r.get(s + '_cpu_us', 0.0):6.2f}" for s in STAGES))
    if any(name.endswith("*") for name, _, _ in rows):
        lines.append("* = the --against core, timed in alternation with this one")
    for name, b, r in rows:
        if r["online_faults"]:
            lines.append(f"WARNING {name} batch {b}: {r['online_faults']} online reads "
                         "failed: those batches timed the degraded path")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``streamscore bench core``."""
    from benchmarks.workspace import prepare_workspace
    from schemas.errors import ConfigError, InfrastructureError
    from stream.endpoints import home_dir, resolve_redis_url

    try:
        batches = sorted({int(b) for b in str(args.batches).split(",") if b.strip()})
    except ValueError:
        raise ConfigError(f"--batches: not a list of integers: {args.batches!r}") from None
    if not batches or min(batches) <= 0 or args.events <= 0:
        raise ConfigError("--batches and --events must be positive")
    repeats = args.repeats or (3 if args.quick else 7)
    server = None
    try:
        redis_url = resolve_redis_url(args.redis_url)
    except InfrastructureError:
        from stream.dev.embedded import resolve_redis

        server = resolve_redis()
        redis_url = server.url
    root = Path(args.workspace) if args.workspace else home_dir() / "bench" / "core"
    pipelines = PIPELINES if args.pipeline == "all" else (args.pipeline,)
    result: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                              "repeats": repeats, "pipelines": []}
    try:
        for p in pipelines:
            print(f"bench core: preparing workspace {root / f'{p}-{args.size}'} ...")
            ws = prepare_workspace(p, root / f"{p}-{args.size}", redis_url, size=args.size,
                                   progress=False,
                                   num_trees=150 if args.size != "full" else None)
            result["pipelines"].append(
                measure(p, ws, redis_url, batches=batches, events=args.events,
                        repeats=repeats, against=getattr(args, "against", None),
                        review_above=getattr(args, "review_above", None)))
    finally:
        if server is not None:
            server.stop()
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(f"load average {result['loadavg_start']} -> {result['loadavg_end']}; "
          f"report {out / 'core.json'}")
    return 0
