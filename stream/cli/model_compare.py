"""``streamscore model compare``: champion vs challenger on outcomes joined back.

Replays the pipeline's decisions and outcomes topics (as ``streamscore outcomes`` does),
joins them, and compares the two model versions on the events both scored: AUC
difference with DeLong's confidence interval, Brier difference, and which model the
evidence favours (``stream.drift.compare``). Optionally writes an HTML page.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from features.argtypes import fraction, non_negative
from schemas.errors import StreamscoreError

__all__ = ["register"]


def _compare(args: argparse.Namespace) -> int:
    from stream.cli.outcomes import service_from_args
    from stream.drift.compare import compare_models

    if not 0.5 < args.confidence < 1:
        raise StreamscoreError("--confidence must be in (0.5, 1)")
    service = service_from_args(args, interval=float("inf"))
    service.early_seconds = float("inf")  # a replay: outcomes wait until the end (drain)
    try:
        deadline, idle = time.monotonic() + args.timeout, 0
        while idle < 2 and time.monotonic() < deadline:
            idle = idle + 1 if service.poll(timeout=1.0) == 0 else 0
        service.drain()
    finally:
        service.close()
    c = service.joiner.counts
    print(f"outcomes: {c.joined} joined, {c.late} late, {c.duplicate} duplicate, "
          f"{c.unmatched} unmatched, {service.invalid} invalid")
    results = []
    for (champ, chall), window in service.joiner.paired.items():
        y, a, b = window.paired()
        try:
            results.append((compare_models(y, a, b, champ, chall, args.confidence), y, a, b))
        except ValueError as exc:
            print(f"{champ} vs {chall}: {len(y)} pairs, not comparable yet ({exc})")
    if not results:
        raise StreamscoreError("no outcomes joined to decisions scored by both champion "
                               "and challenger")
    for r, *_ in results:
        pct = round(100 * r.confidence)
        print(f"champion {r.champion} vs challenger {r.challenger}: {r.n} events, "
              f"{r.positives} positive")
        print(f"  AUC {r.auc_a:.4f} vs {r.auc_b:.4f}: difference {r.auc_diff:+.4f} "
              f"({pct}% CI {r.auc_diff_low:+.4f} .. {r.auc_diff_high:+.4f}, DeLong p "
              f"{r.auc_p:.3g})")
        print(f"  Brier {r.brier_a:.4f} vs {r.brier_b:.4f}: difference {r.brier_diff:+.4f} "
              f"({pct}% CI {r.brier_diff_low:+.4f} .. {r.brier_diff_high:+.4f})")
        print(f"  better: {_verdict(r)}")
    if args.html:
        from stream.drift.report import comparison_page

        path = Path(args.html)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(comparison_page(results), encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _verdict(r: Any) -> str:
    if r.verdict == "challenger":
        return f"challenger {r.challenger} (its AUC is higher; the interval excludes 0)"
    if r.verdict == "champion":
        return f"champion {r.champion} (its AUC is higher; the interval excludes 0)"
    return f"undecided (the interval includes 0): keep champion {r.champion}"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``compare`` under the ``model`` command (registered before this one)."""
    from stream.cli.outcomes import add_join_arguments

    model = sub.choices["model"]
    msub = next(a for a in model._actions if isinstance(a, argparse._SubParsersAction))
    p = msub.add_parser(
        "compare", help="champion vs challenger on outcomes joined back (with CIs)",
        description="Join the outcomes topic to the decisions topic and compare champion "
        "and challenger on the events both scored: AUC difference with a DeLong "
        "confidence interval, Brier difference, and which model is better.")
    add_join_arguments(p)
    p.add_argument("--confidence", type=fraction, default=0.95, metavar="FRACTION",
                   help="confidence level of the intervals (default 0.95)")
    p.add_argument("--timeout", type=non_negative, default=120.0, metavar="S",
                   help="stop reading after this long (default 120)")
    p.add_argument("--html", metavar="PATH", help="also write the comparison as HTML")
    p.set_defaults(func=_compare)
