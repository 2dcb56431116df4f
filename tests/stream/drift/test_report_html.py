"""The HTML drift report: self-contained (no network asset, no script), alarms named where
they fired, and it renders in a real headless Chromium without console errors and with a
screenshot that is not blank."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from schemas.drift import decode_drift
from schemas.outcomes import JoinCountsRecord, OutcomeMetricsRecord
from scorers.refstats import reference_stats
from stream.cli import main
from stream.config import DriftConfig
from stream.drift.monitor import DriftMonitor
from stream.drift.report import render_html
from tests.stream.drift.chromium import chromium, console_messages, load

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["amount", "hour", "merchant_category", "velocity"]


def _draw(rng: np.random.Generator, k: int, shift: float = 0.0) -> np.ndarray:
    return np.column_stack([rng.lognormal(3 + shift, 1, k), rng.integers(0, 24, k),
                            rng.integers(0, 6, k), rng.poisson(2, k)]).astype(float)


def _drift(tmp_path: Path, windows: int = 12, jsonl: Path | None = None):
    """Stationary windows, then ``amount`` shifted in the last third."""
    rng = np.random.default_rng(1)
    ref = reference_stats(_draw(rng, 20_000), NAMES, rng.random(20_000),
                          categorical=["merchant_category"])
    mon = DriftMonitor(ref, NAMES, DriftConfig(window_events=1000, window_seconds=0,
                                               sub_windows=1),
                       "fraud", {"name": "fraud", "version": 3, "sha256": "d" * 64},
                       registry=None, jsonl_path=jsonl)
    out = []
    for i in range(windows):
        shifted = i >= 2 * windows // 3
        codes = rng.choice(3, 1000, p=[0.9, 0.07, 0.03]).astype(np.int8)
        out += map(decode_drift, mon.update(_draw(rng, 1000, 0.6 * shifted),
                                            rng.random(1000), codes,
                                            now=1_790_000_000.0 + 60 * i))
    return out, ref


def _outcomes() -> list[OutcomeMetricsRecord]:
    recs = []
    for i in range(6):
        for v, role, auc in (("3", "champion", 0.80), ("4", "challenger", 0.86)):
            recs.append(OutcomeMetricsRecord(
                pipeline="fraud", model_version=v, role=role, at=1_790_000_000.0 + 120 * i,
                n=1000 + 100 * i, positives=40, auc=auc + 0.005 * i, thresholds=[0.5, 0.8],
                precision=[0.4, 0.7], recall=[0.6, 0.3], brier=0.05 - 0.001 * i,
                reliability_counts=[500, 300, 200], reliability_true=[0.01, 0.2, 0.7],
                reliability_pred=[0.05, 0.3, 0.8], delay_mean=3600.0, delay_p50=3000.0,
                delay_p90=8000.0, delay_max=9000.0, counts=JoinCountsRecord(joined=1000)))
    return recs


def test_page_is_self_contained_and_names_the_alarms(tmp_path):
    records, ref = _drift(tmp_path)
    page = render_html(records, reference=ref, recent_scores=np.random.default_rng(0).random(500),
                       outcomes=_outcomes())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    alarmed = re.search(r"Features that alarmed:</b> ([^<]*)</p>", page).group(1)
    assert "amount" in alarmed.split(", ")
    assert "Outcomes joined back" in page and "challenger" in page


def test_report_command_writes_the_page(tmp_path, capsys):
    jsonl = tmp_path / "drift.jsonl"
    _drift(tmp_path, windows=4, jsonl=jsonl)
    out = tmp_path / "r" / "report.html"
    code = main(["drift", "report", "--pipeline", str(ROOT / "pipelines/fraud.yaml"),
                 "--file", str(jsonl), "--html", str(out)])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    assert "PSI per window" in out.read_text()


def _pixels(png: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return np.asarray(mpimg.imread(str(png)))[..., :3]


@pytest.mark.skipif(chromium() is None,
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    records, ref = _drift(tmp_path)
    page = tmp_path / "report.html"
    scores = np.random.default_rng(2).beta(1.3, 1, 3000)  # shifted towards high scores
    page.write_text(render_html(records, reference=ref, recent_scores=scores,
                                outcomes=_outcomes()), encoding="utf-8")
    shot = tmp_path / "report.png"
    dom, log = load(page, shot)
    assert "Drift report: fraud" in dom and dom.count("<img") == 4
    assert console_messages(log) == [], console_messages(log)
    pixels = _pixels(shot)
    assert pixels.shape[0] >= 1000 and pixels.std() > 0.05  # figures, not a blank page
    keep = os.environ.get("STREAMSCORE_REPORT_SCREENSHOT")  # a path: keep the screenshot
    if keep:
        shutil.copyfile(shot, keep)


@pytest.mark.skipif(chromium() is None,
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_browser_check_can_fail(tmp_path):
    """A page with a script error is caught; a blank page is blank."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script>"
                   "</body></html>")
    _, log = load(bad, tmp_path / "bad.png", size="400,300")
    assert any("Uncaught ReferenceError" in line for line in console_messages(log))
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    load(blank, tmp_path / "blank.png", size="400,300")
    assert _pixels(tmp_path / "blank.png").std() < 1e-6
