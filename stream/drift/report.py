"""The drift report as one self-contained HTML page: drift windows, score distribution,
decision mix and, when outcomes were joined back, online metrics per model version.

Everything the page shows is inside the file: figures are matplotlib PNGs embedded as
``data:`` URIs, the style sheet is inline, there is no script and no network asset, so
the page opens the same from a mail attachment, a CI artifact or an air-gapped host.

Sections:
- a summary table per feature (windows, alarms, first and last alarm, max PSI vs its
  calibrated threshold), alarming features first;
- PSI timelines, one small panel per feature (the alarming ones first), the calibrated
  threshold dashed and alarmed windows marked;
- the score: the training reference's histogram against recent scores (when given) and
  the score's PSI / KS per window;
- the decision mix per window (shares; the mean price multiplier for pricing);
- outcome metrics over time per model version (AUC, Brier, precision and recall at the
  decision thresholds) and the latest reliability diagram, when outcome records exist;
- champion vs challenger on joined outcomes (a ``Comparison``), when given.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.drift import DriftRecord
from schemas.errors import StreamscoreError
from schemas.outcomes import OutcomeMetricsRecord

__all__ = ["comparison_html", "comparison_page", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#222;background:#fff;max-width:1250px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;
border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
tr.alarm td{background:#fdecea}
img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#555;font-size:13px}
"""


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _png(fig: Any) -> str:
    """The figure as an ``<img>`` with a data URI (and the figure closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]],
           alarm_rows: Sequence[bool] | None = None, left: int = 1) -> str:
    e = html.escape
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{e(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr>")
    for k, row in enumerate(rows):
        cls = ' class="alarm"' if alarm_rows and alarm_rows[k] else ""
        out.append(f"<tr{cls}>")
        out += [f'<td class="{"l" if i < left else ""}">{e(str(v))}</td>'
                for i, v in enumerate(row)]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _times(records: Sequence[DriftRecord]) -> list[Any]:
    """Window ends as UTC datetimes (matplotlib's date axis; typed Any for its stubs)."""
    return [datetime.fromtimestamp(r.window_end, tz=UTC) for r in records]


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _feature_order(records: Sequence[DriftRecord]) -> list[str]:
    """Feature names, those that alarmed most first, then by max PSI / threshold."""
    names = [f.name for f in records[-1].features]
    alarms = {n: 0 for n in names}
    ratio = {n: 0.0 for n in names}
    for r in records:
        for f in r.features:
            if f.name in alarms:
                alarms[f.name] += f.alarm
                ratio[f.name] = max(ratio[f.name], f.psi / f.threshold if f.threshold
                                    else float(f.psi > 0))
    return sorted(names, key=lambda n: (-alarms[n], -ratio[n]))


def _series(records: Sequence[DriftRecord], name: str) -> tuple[list[float], list[float],
                                                                  list[bool]]:
    psi, thr, alarm = [], [], []
    for r in records:
        f = r.score if name == "score" else next((g for g in r.features if g.name == name),
                                                 None)
        psi.append(f.psi if f else float("nan"))
        thr.append(f.threshold if f else float("nan"))
        alarm.append(bool(f and f.alarm))
    return psi, thr, alarm


def _summary(records: Sequence[DriftRecord], order: Sequence[str]) -> str:
    rows, marks = [], []
    for name in [*order, "score"]:
        psi, thr, alarm = _series(records, name)
        times = [r.window_end for r, a in zip(records, alarm, strict=True) if a]
        kind = (records[-1].score.kind if name == "score" else
                next(f.kind for f in records[-1].features if f.name == name))
        best = int(np.nanargmax(psi)) if any(p == p for p in psi) else 0
        rows.append([name, kind, len(records), sum(alarm),
                     _utc(times[0]) if times else "-", _utc(times[-1]) if times else "-",
                     _fmt(psi[-1]), _fmt(psi[best]), _fmt(thr[best])])
        marks.append(bool(times))
    return _table(["feature", "kind", "windows", "alarms", "first alarm (UTC)",
                   "last alarm (UTC)", "last PSI", "max PSI", "its threshold"],
                  rows, marks, left=2)


def _psi_panels(records: Sequence[DriftRecord], order: Sequence[str]) -> str:
    import matplotlib.pyplot as plt

    names = [*order, "score"]
    cols = 4
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 2.1 * nrows), squeeze=False,
                             sharex=True)
    times = _times(records)
    for ax, name in zip(axes.ravel(), names, strict=False):
        psi, thr, alarm = _series(records, name)
        ax.plot(times, psi, color="#1f77b4", linewidth=1.2, marker=".", markersize=3)
        ax.plot(times, thr, color="#d62728", linestyle="--", linewidth=0.9)
        at = [t for t, a in zip(times, alarm, strict=True) if a]
        ay = [p for p, a in zip(psi, alarm, strict=True) if a]
        ax.plot(at, ay, "o", color="#d62728", markersize=5)
        ax.set_title(f"{name} ({sum(alarm)} alarms)", fontsize=9,
                     color="#d62728" if any(alarm) else "#222")
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def _score_section(records: Sequence[DriftRecord], reference: Mapping[str, Any] | None,
                   scores: Sequence[float] | None) -> str:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 3.6))
    ref = (reference or {}).get("score")
    have = scores is not None and len(scores) > 0
    edges = np.asarray(ref["edges"], dtype=np.float64) if ref else None
    if edges is not None and ref:
        counts = np.asarray(ref["counts"], dtype=np.float64)
        widths = np.diff(edges)
        ok = widths > 0
        dens = np.where(ok, counts / max(counts.sum(), 1.0) / np.where(ok, widths, 1.0), 0.0)
        left.stairs(dens, edges, fill=True, alpha=0.35, color="#7f7f7f",
                    label="training reference")
        if edges[-1] <= 1.0:  # probabilities: the tail near 0 is where fraud scores live
            left.set_xscale("symlog", linthresh=1e-3)
    if have:
        s = np.asarray(scores, dtype=np.float64)
        if edges is not None:
            s = np.clip(s, edges[0], edges[-1])
        left.hist(s, bins=edges if edges is not None else 30, density=True,
                  histtype="step", linewidth=1.6, color="#1f77b4",
                  label=f"recent scores ({len(s)})")
    if edges is not None or have:
        left.legend(fontsize=8)
        left.set_title("score distribution (density)", fontsize=9)
    else:
        left.text(0.5, 0.5, "no training reference, no recent scores", ha="center",
                  va="center")
        left.set_axis_off()
    times = _times(records)
    psi, thr, alarm = _series(records, "score")
    right.plot(times, psi, marker=".", label="score PSI")
    right.plot(times, thr, "--", color="#d62728", linewidth=0.9, label="threshold")
    ks = [r.score.ks if r.score.ks is not None else float("nan") for r in records]
    right.plot(times, ks, marker=".", color="#2ca02c", label="score KS")
    right.plot([t for t, a in zip(times, alarm, strict=True) if a],
               [p for p, a in zip(psi, alarm, strict=True) if a], "o", color="#d62728")
    right.legend(fontsize=8)
    right.set_title("score drift per window", fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    n = len(scores) if scores is not None else 0
    note = ("training reference" if ref else "no training reference in the model registry")
    note += (f" vs {n} recent scores from the decisions topic" if n else
             "; recent scores are read from the decisions topic with --from-topic")
    return f'<p class="note">{html.escape(note)}</p>' + _png(fig)


def _decision_section(records: Sequence[DriftRecord]) -> str:
    import matplotlib.pyplot as plt

    kinds = sorted({k for r in records for k in r.decisions.shares})
    mult = [r.decisions.mean_multiplier for r in records]
    if not kinds and all(m is None for m in mult):
        return '<p class="note">no decision mix in these windows</p>'
    times = _times(records)
    fig, ax = plt.subplots(figsize=(13, 3))
    if kinds:
        ys = [[r.decisions.shares.get(k, 0.0) for r in records] for k in kinds]
        ax.stackplot(times, ys, labels=kinds, alpha=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of decisions")
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.plot(times, [m if m is not None else float("nan") for m in mult], marker=".")
        ax.set_ylabel("mean price multiplier")
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def _outcome_section(outcomes: Sequence[OutcomeMetricsRecord]) -> str:
    import matplotlib.pyplot as plt

    versions = sorted({o.model_version for o in outcomes})
    nan = float("nan")

    def val(x: float | None) -> float:
        return nan if x is None else x

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    for v in versions:
        rs = sorted((o for o in outcomes if o.model_version == v), key=lambda o: o.at)
        t: list[Any] = [datetime.fromtimestamp(o.at, tz=UTC) for o in rs]
        label = f"{v} ({rs[-1].role})"
        axes[0].plot(t, [val(o.auc) for o in rs], marker=".", label=label)
        axes[1].plot(t, [val(o.brier) for o in rs], marker=".", label=label)
        axes[2].plot(t, [o.precision[0] if o.precision else nan for o in rs], marker=".",
                     label=label)
        axes[2].plot(t, [o.recall[0] if o.recall else nan for o in rs], linestyle=":")
        last = rs[-1]
        axes[3].plot(last.reliability_pred, last.reliability_true, marker="o", label=label)
    axes[3].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for ax, title in zip(axes, ("AUC", "Brier score", "precision (solid), recall (dotted) "
                                "at the first threshold", "reliability (latest window)"),
                         strict=True):
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    rows = []
    for v in versions:
        o = max((o for o in outcomes if o.model_version == v), key=lambda o: o.at)
        pr = ", ".join(f"{t:g}: {p:.3f}/{r:.3f}" for t, p, r in
                       zip(o.thresholds, o.precision, o.recall, strict=True))
        rows.append([v, o.role, _utc(o.at), o.n, o.positives, _fmt(o.auc), _fmt(o.brier),
                     pr or "-", _fmt(o.delay_p50, 0), _fmt(o.delay_p90, 0),
                     o.counts.joined, o.counts.late, o.counts.duplicate, o.counts.unmatched])
    return _png(fig) + _table(
        ["model version", "role", "at (UTC)", "pairs", "positives", "AUC", "Brier",
         "precision/recall at thresholds", "delay p50 s", "delay p90 s", "joined", "late",
         "duplicate", "unmatched"], rows, left=2)


def _roc(y: Any, s: Any) -> tuple[Any, Any]:
    """False and true positive rates at every distinct threshold (ties stepped at once)."""
    order = np.argsort(-np.asarray(s), kind="mergesort")
    ys, ss = np.asarray(y)[order], np.asarray(s)[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], ys.size - 1]
    tp, fp = np.cumsum(ys)[last], np.cumsum(1 - ys)[last]
    return (np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)])


def comparison_html(results: Sequence[tuple[Any, Any, Any, Any]]) -> str:
    """Champion vs challenger: a table of ``Comparison`` rows (AUC and Brier differences
    with their intervals, the verdict) and both ROC curves per pair, from
    ``(comparison, labels, champion scores, challenger scores)`` tuples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for r, *_ in results:
        rows.append([r.champion, r.challenger, r.n, r.positives, _fmt(r.auc_a), _fmt(r.auc_b),
                     f"{r.auc_diff:+.4f} [{r.auc_diff_low:+.4f}, {r.auc_diff_high:+.4f}]",
                     f"{r.auc_p:.3g}",
                     f"{r.brier_diff:+.4f} [{r.brier_diff_low:+.4f}, {r.brier_diff_high:+.4f}]",
                     r.verdict])
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, (r, y, a, b) in zip(axes.ravel(), results, strict=True):
        for scores, name in ((a, f"champion {r.champion}"), (b, f"challenger {r.challenger}")):
            fpr, tpr = _roc(y, scores)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    conf = round(100 * results[0][0].confidence) if results else 95
    return _table(["champion", "challenger", "events", "positives", "AUC champion",
                   "AUC challenger", f"AUC difference [{conf}% CI, DeLong]", "p",
                   f"Brier difference [{conf}% CI]", "better"], rows, left=2) + _png(fig)


def comparison_page(results: Sequence[tuple[Any, Any, Any, Any]]) -> str:
    """A self-contained page of :func:`comparison_html`."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>champion vs challenger</title><style>{_CSS}</style></head><body>"
            "<h1>Champion vs challenger on joined outcomes</h1>"
            f"{comparison_html(results)}</body></html>")


def render_html(
    records: Sequence[DriftRecord],
    *,
    reference: Mapping[str, Any] | None = None,
    recent_scores: Sequence[float] | None = None,
    outcomes: Sequence[OutcomeMetricsRecord] = (),
    comparison_html: str = "",
) -> str:
    """The report page for drift records (oldest first) and optional extras: the model's
    training reference statistics (for the score histogram), recent scores, outcome
    metric records, and a champion-vs-challenger section already rendered."""
    import matplotlib

    matplotlib.use("Agg")
    if not records:
        raise StreamscoreError("no drift windows to report")
    latest = records[-1]
    order = _feature_order(records)
    alarmed = [n for n in order if any(_series(records, n)[2])]
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>drift report: {e(latest.pipeline)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drift report: {e(latest.pipeline)}</h1>",
        f'<p class="meta">model {e(latest.model_name)}@{e(latest.model_version)} '
        f"(sha256 {e(latest.model_sha256[:12])}), {len(records)} windows from "
        f"{_utc(records[0].window_start)} to {_utc(latest.window_end)} UTC, "
        f"{latest.n} events in the latest window vs {latest.reference_n} in training; "
        f"each feature's threshold is calibrated to a false-alarm rate of "
        f"{latest.false_alarm_rate:g} per window.</p>",
        f"<p><b>Features that alarmed:</b> {e(', '.join(alarmed)) or 'none'}</p>",
        "<h2>Features</h2>", _summary(records, order),
        "<h2>PSI per window</h2><p class=\"note\">dashed red: calibrated threshold; red "
        "dots: alarmed windows; alarming features first.</p>", _psi_panels(records, order),
        "<h2>Score</h2>", _score_section(records, reference, recent_scores),
        "<h2>Decisions</h2>", _decision_section(records),
    ]
    if outcomes:
        parts += ["<h2>Outcomes joined back</h2>", _outcome_section(outcomes)]
    if comparison_html:
        parts += ["<h2>Champion vs challenger</h2>", comparison_html]
    parts.append("</body></html>")
    return "\n".join(parts)
