"""One stack's benchmark: warm-up, drain, rate steps; then the cross-stack summary.

``run_stack`` drives one stack (hop, worker or naive) through its measurements and
returns plain data for the report: per rate step the send accuracy, end-to-end
percentiles (HDR), the worker's own latency, the mean breakdown by stage (the drift
update's time per batch, read from the worker's stage histogram, carved out of "out"), the
worker's per-batch stage times and drift / score, a CDF table
and the accounting of every event (decision, dead letter, misrouted, missing,
duplicate). ``summarize`` picks the sustainable rate of each stack (the highest step
with every event accounted for, p99 within the budget and the output following the
offered rate) and the ratios between stacks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.loadgen import EventFactory, send_open_loop
from benchmarks.measure import STAGES, Collector, latency_stats, percentile_table

__all__ = ["bucket_percentiles", "run_stack", "stage_means", "stage_totals", "summarize"]

# The worker's own histogram: batch consumed -> every output acked and offsets committed.
ACK_METRIC = "streamscore_batch_ack_seconds"
# The worker's per-batch stage times (stream.metrics), labelled by stage; "drift" is the
# drift monitor's update, which the stage stamps of the decisions do not carry.
STAGE_METRIC = "streamscore_stage_latency_seconds"
# Output rate below this share of the offered rate = the stack no longer keeps up.
FOLLOW_SHARE = 0.9
WARMUP_EVENTS = 200
WARMUP_RATE = 200.0


class StackFailed(RuntimeError):
    """A stack died or never answered; the message carries its log tail."""


def run_stack(
    stack: Any, producer: Any, factory: EventFactory, *, bootstrap: str, prefix: str,
    rates: list[float], duration: float, budget_ms: float, drain_events: int,
    startup_timeout: float, progress: Any = None, warmup_events: int = WARMUP_EVENTS,
    profile_dir: Any = None, all_rates: bool = False,
) -> dict[str, Any]:
    """Warm up, drain and sweep one stack; always stops it and its collector."""
    out: dict[str, Any] = {"steps": [], "drain": None, "warmup": None, "error": None}
    collector = Collector(bootstrap, stack.output_topics,
                          dead_letter_topics=stack.dead_letter_topics, mode=stack.mode)
    collector.start()
    stack.start()
    try:
        out["warmup"] = _warmup(stack, collector, producer, factory, prefix + "w",
                                startup_timeout, warmup_events)
        _tick(progress)
        if stack.pausable and drain_events > 0:
            out["drain"] = _drain(stack, collector, producer, factory, prefix + "d",
                                  drain_events)
        _tick(progress)
        if profile_dir is not None and hasattr(stack, "start_profile"):
            stack.start_profile(profile_dir)  # py-spy over the sweep's rate steps
        for k, rate in enumerate(rates):
            step = _step(stack, collector, producer, factory, f"{prefix}s{k}r", rate,
                         duration, budget_ms)
            out["steps"].append(step)
            _tick(progress)
            if not stack.alive():
                raise StackFailed(f"{stack.name} died during the sweep:\n{stack.log_tail()}")
            # Past the sustainable rate: stop, unless asked for the whole curve (then stop
            # only once the output collapses, when more load only builds a backlog).
            if not step["ok"] and (not all_rates or step["throughput"] < 0.5 * rate):
                break
    except StackFailed as exc:
        out["error"] = str(exc)
    finally:
        if getattr(stack, "profilers", None):
            out["profile"] = stack.stop_profile()
        stack.stop()
        collector.stop()
    out["unmatched"] = collector.unmatched
    return out


def _tick(progress: Any) -> None:
    if progress is not None:
        progress.update(1)


def _warmup(
    stack: Any, collector: Collector, producer: Any, factory: EventFactory, prefix: str,
    timeout: float, events: int,
) -> dict[str, float]:
    t0 = time.time()
    batch = factory.make(max(1, events), prefix)
    collector.expect(prefix, len(batch))
    send_open_loop(producer, stack.input_topic, batch.keys, batch.payloads, WARMUP_RATE)
    deadline = time.monotonic() + timeout
    while not collector.wait(prefix, timeout=0.5):
        if not stack.alive():
            raise StackFailed(f"{stack.name} exited during warm-up:\n{stack.log_tail()}")
        if time.monotonic() > deadline:
            raise StackFailed(
                f"{stack.name} answered {collector.accounted(prefix)}/{len(batch)} warm-up "
                f"events in {timeout:.0f} s:\n{stack.log_tail()}"
            )
    return {"seconds": round(time.time() - t0, 2), "events": len(batch)}


def _drain(
    stack: Any, collector: Collector, producer: Any, factory: EventFactory, prefix: str,
    n: int,
) -> dict[str, float]:
    """Backlog of ``n`` events built while the stack is stopped, then timed to empty."""
    batch = factory.make(n, prefix)
    exp = collector.expect(prefix, n)
    # Scraped before the pause (a stopped process answers no scrape): the drain's large
    # batches are where drift / score means what the drift target asks (512+ events a batch).
    stages_before = stage_totals(stack)
    stack.pause()
    try:
        for key, payload in zip(batch.keys, batch.payloads, strict=True):
            while True:
                try:
                    producer.produce(stack.input_topic, payload, key=key)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        producer.flush(60)
    finally:
        resumed = time.time()
        stack.resume()
    # Generous: a drain left unfinished would leak its backlog into the first rate step.
    complete = collector.wait(prefix, timeout=max(60.0, n / 100.0), alive=stack.alive)
    if not stack.alive():
        raise StackFailed(f"{stack.name} died while draining:\n{stack.log_tail()}")
    last = float(np.nanmax(exp.recv)) if exp.count else resumed
    seconds = max(last - resumed, 1e-9)
    stages_after = stage_totals(stack)
    # Batches the worker scored meanwhile: the drain's events per batch, so a drift /
    # score ratio can be read against the batch size it was measured at.
    scored = stages_after.get("score", (0.0, 0.0))[1] - stages_before.get("score", (0.0, 0.0))[1]
    return {"events": n, "accounted": exp.count, "complete": complete,
            "seconds": round(seconds, 3), "rate": round(exp.count / seconds, 1),
            "events_per_batch": round(n / scored, 1) if scored > 0 else None,
            **stage_means(stages_before, stages_after)}


def _step(
    stack: Any, collector: Collector, producer: Any, factory: EventFactory, prefix: str,
    rate: float, duration: float, budget_ms: float,
) -> dict[str, Any]:
    n = max(20, round(rate * duration))
    batch = factory.make(n, prefix)
    exp = collector.expect(prefix, n)
    scrape = getattr(stack, "histogram", None)
    ack_before = scrape(ACK_METRIC) if scrape else {}
    stages_before = stage_totals(stack)
    send = send_open_loop(producer, stack.input_topic, batch.keys, batch.payloads, rate)
    # 10 s at least: a consumer that rejoins its group on Apache Kafka (a rebalance after
    # the drain's pause) answers seconds late, and that is latency to count, not loss.
    collector.wait(prefix, timeout=max(10.0, 2.0 * duration), alive=stack.alive)
    waited_until = time.time()
    ack_after = scrape(ACK_METRIC) if scrape else {}
    stages_after = stage_totals(stack)
    sched = send.scheduled
    kind = exp.kind.copy()
    recv = exp.recv.copy()
    got = kind > 0
    missing = int((~got).sum())
    is_decision = kind == 1
    # Events still missing count at the time we stopped waiting: a lower bound, so a
    # stack that falls behind is never flattered by leaving its slowest events out.
    lat_ms = np.where(got, recv - sched, waited_until - sched) * 1e3
    raw = stack.mode == "raw"
    measured = np.ones(n, bool) if raw else (is_decision | (~got & (batch.kind < 2)))
    e2e = latency_stats(lat_ms[measured] * 1e3)
    last = float(np.nanmax(recv)) if got.any() else waited_until
    throughput = float(got.sum()) / max(last - float(sched[0]), 1e-9)
    step: dict[str, Any] = {
        "rate": rate, "events": n, "send": send.summary(), "e2e": e2e,
        "throughput": round(throughput, 1),
        "accounting": _accounting(batch.kind, kind, raw, missing, exp.duplicates),
    }
    if not raw:
        dl = kind == 2
        step["dead_letter_e2e"] = latency_stats(lat_ms[dl] * 1e3) if dl.any() else {}
        own = (exp.msg_ts - exp.decided_at) * 1e3
        own = own[is_decision & np.isfinite(own)]
        step["worker_own"] = latency_stats(np.maximum(own, 0.0) * 1e3) if own.size else {}
        if ack_after:
            step["worker_ack"] = bucket_percentiles(ack_before, ack_after)
        step["degraded"] = {"decisions": exp.degraded_any, "reasons": dict(exp.degraded)}
    step["breakdown"] = _breakdown(exp, sched, is_decision if not raw else got, raw)
    if not raw:
        step.update(stage_means(stages_before, stages_after))
        drift = step["stage_per_batch_ms"].get("drift")
        mean = step["breakdown"].get("mean_ms")
        if drift is not None and mean and "out" in mean:
            # The update runs after the decisions are built and before they are
            # produced: every event of the batch waits for it, inside "out".
            mean["drift"] = min(drift, max(mean["out"], 0.0))
            mean["out"] -= mean["drift"]
    xs, qs = percentile_table(lat_ms[measured])
    step["cdf"] = {"latency_ms": np.round(xs, 4).tolist(), "fraction": np.round(qs, 6).tolist()}
    p99 = e2e.get("p99")
    acc = step["accounting"]
    step["ok"] = bool(
        missing == 0 and acc["misrouted"] == 0 and p99 is not None and p99 <= budget_ms
        and throughput >= FOLLOW_SHARE * rate
    )
    return step


def bucket_percentiles(
    before: dict[float, float], after: dict[float, float],
) -> dict[str, float | None]:
    """p50/p99 (ms, bucket upper bounds) of what a Prometheus histogram saw in between."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    total = counts[-1] if counts else 0.0
    out: dict[str, float | None] = {"batches": total}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        bound = next((le for le, c in zip(les, counts, strict=True) if c >= q * total), None)
        out[name] = None if not total or bound is None else (
            float("inf") if bound == float("inf") else round(bound * 1e3, 3))
    return out


def stage_totals(stack: Any) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, batches) of the worker's stage histogram, summed over its
    copies' /metrics; empty for a stack without metrics (hop, naive) or a worker that is
    not answering."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = {}
    for port in getattr(stack, "metrics_ports", None) or ():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
            families = list(text_string_to_metric_families(text))
        except (OSError, ValueError):
            continue
        for fam in families:
            if fam.name != STAGE_METRIC:
                continue
            for sample in fam.samples:
                stage = sample.labels.get("stage")
                kind = {"_sum": 0, "_count": 1}.get(sample.name[len(STAGE_METRIC):])
                if stage is not None and kind is not None:
                    totals.setdefault(stage, [0.0, 0.0])[kind] += float(sample.value)
    return {stage: (v[0], v[1]) for stage, v in totals.items()}


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    """Mean ms per batch of each stage between two ``stage_totals``, and the drift
    update's time as a share of scoring (``None`` when either stage is missing: an older
    worker, or the Faust app, reports no drift stage)."""
    means: dict[str, float] = {}
    for stage, (seconds, batches) in after.items():
        s0, b0 = before.get(stage, (0.0, 0.0))
        if batches > b0:
            means[stage] = round((seconds - s0) / (batches - b0) * 1e3, 4)
    drift, score = means.get("drift"), means.get("score")
    return {"stage_per_batch_ms": means,
            "drift_over_score": round(drift / score, 4) if drift is not None and score else None}


def _accounting(
    sent_kind: np.ndarray, got_kind: np.ndarray, raw: bool, missing: int, duplicates: int,
) -> dict[str, int]:
    if raw:
        return {"events": int(sent_kind.size), "decisions": int((got_kind > 0).sum()),
                "dead_letters": 0, "misrouted": 0, "missing": missing,
                "duplicates": duplicates}
    good, bad = sent_kind < 2, sent_kind == 2
    return {
        "events": int(sent_kind.size), "expected_decisions": int(good.sum()),
        "expected_dead_letters": int(bad.sum()), "unknown_entities": int((sent_kind == 1).sum()),
        "decisions": int((got_kind == 1).sum()), "dead_letters": int((got_kind == 2).sum()),
        "misrouted": int(((got_kind == 1) & bad).sum() + ((got_kind == 2) & good).sum()),
        "missing": missing, "duplicates": duplicates,
    }


def _breakdown(exp: Any, sched: np.ndarray, rows: np.ndarray, raw: bool) -> dict[str, Any]:
    """Mean ms per event of each segment of the path, over ``rows``."""
    if not rows.any():
        return {}
    total = (exp.recv[rows] - sched[rows]) * 1e3
    if raw:  # one hop: all of it is the broker
        return {"mean_ms": {"queue": float(np.mean(total))}}
    queue = (exp.decided_at[rows] - sched[rows]) * 1e3
    stages = exp.stages[rows]
    means = {s: float(np.nanmean(stages[:, i])) if np.isfinite(stages[:, i]).any() else 0.0
             for i, s in enumerate(STAGES)}
    out = total - queue - np.nansum(stages, axis=1)
    mean = {"queue": _nanmean(queue), **means, "out": _nanmean(out)}
    return {"mean_ms": mean, "total_ms": _nanmean(total)}


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else 0.0


def _sustainable(stack: dict[str, Any]) -> float:
    ok = [s["rate"] for s in stack["steps"] if s["ok"]]
    return max(ok) if ok else 0.0


def summarize(result: dict[str, Any], budget_ms: float) -> None:
    """Add ``summary``, ``cdf_rate`` and each stack's ``breakdown``/``cdf`` in place."""
    stacks = result["stacks"]
    summary: dict[str, Any] = {}
    for name, st in stacks.items():
        summary[f"{name}_sustainable_eps"] = _sustainable(st)
        if st.get("drain"):
            summary[f"{name}_drain_eps"] = st["drain"]["rate"]
            if st["drain"].get("drift_over_score") is not None:
                summary[f"{name}_drift_over_score_in_drain"] = st["drain"]["drift_over_score"]
            if st["drain"].get("events_per_batch") is not None:
                summary[f"{name}_drain_events_per_batch"] = st["drain"]["events_per_batch"]
        if st.get("error"):
            result["notes"].append(f"{name}: {st['error'].splitlines()[0]}")
    # One rate for the CDF and breakdown: the highest every stack reached, preferring one
    # every stack sustained.
    rate_sets = [{s["rate"] for s in st["steps"]} for st in stacks.values() if st["steps"]]
    common = set.intersection(*rate_sets) if rate_sets else set()
    ok_common = {r for r in common if all(
        any(s["rate"] == r and s["ok"] for s in st["steps"]) for st in stacks.values())}
    cdf_rate = max(ok_common or common) if (ok_common or common) else None
    result["cdf_rate"] = cdf_rate
    for name, st in stacks.items():
        steps = st["steps"]
        chosen = next((s for s in steps if s["rate"] == cdf_rate), steps[-1] if steps else None)
        if chosen is None:
            continue
        if chosen["breakdown"]:
            st["breakdown"] = {"rate": chosen["rate"], **chosen["breakdown"]}
            if chosen.get("drift_over_score") is not None:
                st["breakdown"]["drift_over_score"] = chosen["drift_over_score"]
        st["cdf"] = {"rate": chosen["rate"], **chosen["cdf"]}
        summary[f"{name}_p99_ms_at_{chosen['rate']:g}"] = chosen["e2e"].get("p99")
        own = chosen.get("worker_own", {}).get("p99")
        if own is not None:
            summary[f"{name}_fetch_to_produce_p99_ms_at_{chosen['rate']:g}"] = own
        deg = chosen.get("degraded", {}).get("decisions")
        if deg is not None and chosen["accounting"]["decisions"]:
            summary[f"{name}_degraded_share_at_{chosen['rate']:g}"] = round(
                deg / chosen["accounting"]["decisions"], 3)
        ack = chosen.get("worker_ack", {}).get("p99")
        if ack is not None:
            summary[f"{name}_batch_ack_p99_ms_at_{chosen['rate']:g}_le"] = ack
        if name == "worker":
            ratio = chosen.get("drift_over_score")
            if ratio is not None:
                summary[f"worker_drift_over_score_at_{chosen['rate']:g}"] = ratio
            else:
                result["notes"].append(
                    "worker: no drift stage time in its metrics (drift off, no reference "
                    "statistics in the model, or a worker that does not time it)")
    w, nv = summary.get("worker_sustainable_eps"), summary.get("naive_sustainable_eps")
    if w is not None and nv is not None:
        lowest = min(result["settings"]["rates"])
        summary["throughput_ratio_at_budget"] = round(w / nv, 2) if nv else None
        if not nv and w:
            result["notes"].append(
                f"naive stack sustained none of the rates (lowest {lowest:g}/s within "
                f"{budget_ms:g} ms): the ratio is at least {w / lowest:.1f}x")
        elif not nv:
            result["notes"].append(
                f"neither stack kept p99 within {budget_ms:g} ms at any offered rate (lowest "
                f"{lowest:g}/s): no throughput-at-budget ratio; compare the drain rates and "
                "the p99 at equal rates, and the hop's p99 for what the broker alone costs")
    wd, nd = summary.get("worker_drain_eps"), summary.get("naive_drain_eps")
    if wd and nd:
        summary["drain_ratio"] = round(wd / nd, 2)
    if cdf_rate is not None and "worker" in stacks and "naive" in stacks:
        a = summary.get(f"naive_p99_ms_at_{cdf_rate:g}")
        b = summary.get(f"worker_p99_ms_at_{cdf_rate:g}")
        if a and b:
            summary[f"p99_ratio_naive_over_worker_at_{cdf_rate:g}"] = round(a / b, 2)
    # Misrouted or duplicated outputs are errors; missing ones only mean the stack had
    # not caught up when its step's wait ended (an overloaded step), so both are shown.
    steps = [s for st in stacks.values() for s in st["steps"]]
    summary["misrouted_or_duplicated"] = sum(
        s["accounting"]["misrouted"] + s["accounting"]["duplicates"] for s in steps)
    summary["missing_when_steps_ended"] = sum(s["accounting"]["missing"] for s in steps)
    summary["every_event_accounted"] = summary["missing_when_steps_ended"] == 0 and \
        summary["misrouted_or_duplicated"] == 0
    result["summary"] = summary
    result["complete"] = not any(st.get("error") for st in stacks.values())
