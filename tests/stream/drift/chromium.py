"""Open a local HTML file in Debian's headless Chromium: its DOM after load, the console
lines Chromium logged, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["chromium", "console_messages", "load"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def load(page: Path, screenshot: Path, size: str = "1300,2400",
         timeout: float = 120.0) -> tuple[str, str]:
    """``(dom, stderr of both runs)`` of ``page``; the screenshot is written to
    ``screenshot``."""
    url = page.resolve().as_uri()
    dom = _run(["--dump-dom", url], timeout)
    shot = _run([f"--screenshot={screenshot}", f"--window-size={size}", url], timeout)
    return dom.stdout, dom.stderr + shot.stderr


def console_messages(stderr: str) -> list[str]:
    """The page's console lines in Chromium's log (``INFO:CONSOLE:<line>] "<text>"``): a
    page without scripts has none, so any (an exception, a CSP or mixed-content complaint,
    a failed load reported to the console) is a finding."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]
