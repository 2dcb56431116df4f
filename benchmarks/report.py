"""Reports of an end-to-end benchmark run: JSON, Markdown and PNG plots.

Input is the result dict built by ``benchmarks.bench_e2e`` (machine, command, settings,
per-stack steps with percentiles, breakdowns and accounting, drain, summary ratios, and
the raw latency quantiles used for the CDF). Plots use matplotlib's Agg backend (no
display needed): latency percentiles vs offered rate for every stack, the stage
breakdown at one rate, and the latency CDF at that rate.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "write_reports"]

_PACKAGES = ("confluent-kafka", "feast", "lightgbm", "numba", "numpy", "msgspec", "redis",
             "hdrhistogram", "streamscore")
_COLORS = {"worker": "tab:blue", "naive": "tab:red", "hop": "tab:gray"}
_SEGMENTS = ("queue", "decode", "features", "score", "policy", "encode", "drift", "out")
# The worker's per-batch stages (its Prometheus stage histogram), in pipeline order.
_BATCH_STAGES = ("decode", "features", "score", "policy", "explain", "drift")


def machine_info(redis_url: str | None = None) -> dict[str, Any]:
    """Cores, CPU model, load, OS, Python and package versions (and Redis's)."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(), "cpu_model": _cpu_model(), "platform": platform.platform(),
        "python": sys.version.split()[0], "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    with _suppress():
        info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                        check=False, timeout=5).stdout.strip()
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    with _suppress():
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    if redis_url:
        with _suppress():
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=2)
            server: Any = client.info("server")
            versions["redis-server"] = str(server.get("redis_version"))
            client.close()
    info["versions"] = versions
    return info


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def write_reports(result: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``e2e.json``, ``e2e.md`` and the PNG plots into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "e2e.json", out / "e2e.md"]
    pngs: dict[str, Path] = {}
    if plots:
        pngs = _plots(result, out)
    result = {**result, "plots": {k: v.name for k, v in pngs.items()}}
    files[0].write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    files[1].write_text(markdown(result))
    return files + list(pngs.values())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report."""
    m, s = result["machine"], result["summary"]
    lines = [
        f"# End-to-end latency benchmark ({result['settings']['pipeline']})",
        "",
        f"Run {result['started_at']} on {m['cores']} cores ({m['cpu_model']}), "
        f"broker `{result['settings']['broker']}`, budget {result['settings']['budget_ms']} ms.",
        f"Load average at start / end: {m['loadavg']} / {result.get('loadavg_end')} "
        "(other processes share these cores: numbers are only as quiet as the machine).",
        "",
        "Command:",
        "",
        f"    {result['command']}",
        "",
        "## Summary",
        "",
        "| | value |",
        "|---|---|",
    ]
    for key, value in s.items():
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(value, 2)} |")
    lines += ["", "## Latency by offered rate (ms, from scheduled send to output received)", "",
              "| stack | rate/s | sent rate | out rate | p50 | p99 | p99.9 | max | "
              "fetch->produce p99 | batch ack p99 <= | decisions | degraded | dead letters | "
              "missing | ok |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, stack in result["stacks"].items():
        for st in stack["steps"]:
            e, a = st["e2e"], st["accounting"]
            own = st.get("worker_own", {}).get("p99")
            ack = st.get("worker_ack", {}).get("p99")
            lines.append(
                f"| {name} | {_fmt(st['rate'], 0)} | {_fmt(st['send']['achieved_rate'], 0)} | "
                f"{_fmt(st['throughput'], 0)} | {_fmt(e.get('p50'), 2)} | {_fmt(e.get('p99'), 2)}"
                f" | {_fmt(e.get('p999'), 2)} | {_fmt(e.get('max'), 2)} | {_fmt(own, 2)} | "
                f"{_fmt(ack, 1)} | "
                f"{a['decisions']} | {_fmt(st.get('degraded', {}).get('decisions'))} | "
                f"{a['dead_letters']} | {a['missing']} | "
                f"{'yes' if st['ok'] else 'no'} |"
            )
    degraded = [(n, s["rate"], s["degraded"]["reasons"]) for n, st in result["stacks"].items()
                for s in st["steps"] if s.get("degraded", {}).get("reasons")]
    if degraded:
        lines += ["", "Degraded decisions by reason (decided with missing/stale features or "
                  "by fallback rules; the naive stack does not report this):", ""]
        lines += [f"- {n} @ {r:g}/s: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
                  for n, r, d in degraded]
    lines += ["", "## Where the time goes (mean ms per event at the breakdown rate)", "",
              "| stack | " + " | ".join(_SEGMENTS) + " |",
              "|---|" + "---|" * len(_SEGMENTS)]
    for name, stack in result["stacks"].items():
        bd = stack.get("breakdown")
        if bd:
            lines.append(f"| {name} @ {_fmt(bd['rate'], 0)}/s | "
                         + " | ".join(_fmt(bd["mean_ms"].get(k), 3) for k in _SEGMENTS) + " |")
    lines += ["", "queue = scheduled send -> fetched by the worker (input hop + waiting); "
              "decode..encode = the worker's own stage stamps; out = the rest (produce, "
              "acknowledgement wait, output hop, collector). fetch->produce = the worker's "
              "decided_at stamp to its decision message's timestamp (ms resolution); batch "
              "ack = the worker's own histogram (batch consumed -> outputs acknowledged and "
              "offsets committed), read from its /metrics, as a bucket upper bound. drift = "
              "the drift monitor's update per batch (the worker's stage histogram), which "
              "every event of the batch waits for before its decision is produced.", ""]
    lines += _stage_table(result)
    lines += ["## Drain (backlog built while the stack was paused)", "",
              "| stack | events | seconds | events/s | score ms/batch | drift ms/batch "
              "| drift / score |", "|---|---|---|---|---|---|---|"]
    for name, stack in result["stacks"].items():
        d = stack.get("drain")
        if d:
            per = d.get("stage_per_batch_ms") or {}
            ratio = d.get("drift_over_score")
            lines.append(f"| {name} | {d['events']} | {_fmt(d['seconds'], 2)} | "
                         f"{_fmt(d['rate'], 0)} | {_fmt(per.get('score'), 3)} | "
                         f"{_fmt(per.get('drift'), 3)} | "
                         f"{'-' if ratio is None else f'{ratio:.1%}'} |")
    for name, stack in result["stacks"].items():
        prof = stack.get("profile")
        if prof and prof.get("samples"):
            lines += ["", f"## Profile of {name} (py-spy, {prof['samples']} samples over the "
                      "sweep; share of samples)", "", "| self | share | inclusive | share |",
                      "|---|---|---|---|"]
            for a, b in zip(prof["self"], prof["inclusive"], strict=False):
                lines.append(f"| `{a['function']}` | {a['share']:.1%} | `{b['function']}` | "
                             f"{b['share']:.1%} |")
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{k}]({v})" for k, v in result["plots"].items()]
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in m.get("versions", {}).items()]
    notes = result.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _stage_table(result: dict[str, Any]) -> list[str]:
    """Per rate step, the worker's mean ms per batch of each stage and drift / score."""
    rows = [(name, st) for name, stack in result["stacks"].items() for st in stack["steps"]
            if st.get("stage_per_batch_ms")]
    if not rows:
        return []
    lines = ["## Worker stage time per batch (mean ms, its stage histogram)", "",
             "| stack | rate/s | " + " | ".join(_BATCH_STAGES) + " | drift / score |",
             "|---|---|" + "---|" * (len(_BATCH_STAGES) + 1)]
    for name, st in rows:
        ms = st["stage_per_batch_ms"]
        ratio = st.get("drift_over_score")
        lines.append(f"| {name} | {_fmt(st['rate'], 0)} | "
                     + " | ".join(_fmt(ms.get(k), 3) for k in _BATCH_STAGES)
                     + f" | {'-' if ratio is None else f'{ratio:.1%}'} |")
    lines += ["", "- = not reported (drift off, no reference statistics, or a worker that "
              "does not time the drift update). Target: drift < 5% of score.", ""]
    return lines


def _plots(result: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    budget = float(result["settings"]["budget_ms"])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    top = 1.0
    for name, stack in result["stacks"].items():
        steps = [s for s in stack["steps"] if s["e2e"].get("p50") is not None]
        if not steps:
            continue
        rates = [s["rate"] for s in steps]
        top = max(top, *rates)
        color = _COLORS.get(name)
        for key, style in (("p50", ":"), ("p99", "-"), ("p999", "--")):
            axes[0].plot(rates, [s["e2e"][key] for s in steps], style, marker="o",
                         color=color, label=f"{name} {key}")
        axes[1].plot(rates, [s["throughput"] for s in steps], "-", marker="o", color=color,
                     label=name)
    axes[0].axhline(budget, color="k", lw=0.8, ls=":", label=f"budget {budget:g} ms")
    axes[0].set_ylabel("end-to-end latency (ms)")
    axes[0].set_title("latency percentiles vs offered rate")
    axes[1].plot([1, top], [1, top], color="k", lw=0.8, ls=":", label="output = offered")
    axes[1].set_ylabel("output rate (events/s)")
    axes[1].set_title("throughput vs offered rate")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (events/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths["latency_vs_rate"] = out / "e2e_latency_vs_rate.png"
    fig.savefig(paths["latency_vs_rate"], dpi=110)
    plt.close(fig)

    bds = {n: s["breakdown"] for n, s in result["stacks"].items() if s.get("breakdown")}
    if bds:
        # One panel per stack, each on its own scale: the naive stack's queueing would
        # otherwise flatten the worker's bar to nothing.
        fig, axes_bd = plt.subplots(len(bds), 1, figsize=(10, 0.6 + 1.3 * len(bds)),
                                    squeeze=False)
        cmap = plt.get_cmap("tab10")
        for row, (name, bd) in enumerate(bds.items()):
            ax = axes_bd[row][0]
            left = 0.0
            for k, seg in enumerate(_SEGMENTS):
                width = max(float(bd["mean_ms"].get(seg) or 0.0), 0.0)
                ax.barh(0, width, left=left, color=cmap(k), label=seg)
                left += width
            ax.set_yticks([0])
            ratio = bd.get("drift_over_score")
            ax.set_yticklabels([f"{name} @ {bd['rate']:g}/s" + (
                f"\ndrift / score {ratio:.1%}" if ratio is not None else "")])
            ax.set_xlabel("mean ms per event")
        fig.suptitle("where the time goes (scheduled send -> output received)")
        axes_bd[-1][0].legend(ncol=len(_SEGMENTS), fontsize=7, loc="upper center",
                              bbox_to_anchor=(0.5, -0.8))
        paths["stage_breakdown"] = out / "e2e_stage_breakdown.png"
        fig.savefig(paths["stage_breakdown"], dpi=110, bbox_inches="tight")
        plt.close(fig)

    cdf_rate = result.get("cdf_rate")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, stack in result["stacks"].items():
        cdf = stack.get("cdf")
        if cdf and cdf["latency_ms"]:
            ax.plot(cdf["latency_ms"], cdf["fraction"], color=_COLORS.get(name),
                    label=f"{name} @ {cdf['rate']:g}/s")
            drawn = True
    if drawn:
        ax.axvline(budget, color="k", lw=0.8, ls=":", label="budget")
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("fraction of events")
        ax.set_title(f"latency CDF at {cdf_rate:g} events/s" if cdf_rate else "latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths["cdf"] = out / "e2e_cdf.png"
        fig.savefig(paths["cdf"], dpi=110)
    plt.close(fig)
    return paths
