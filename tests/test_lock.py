"""The environment the suite runs in is exactly the lock's (what `make` installs)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def test_every_locked_package_is_installed_at_its_locked_version():
    pins = _pins(ROOT / "requirements" / "dev.lock")
    assert len(pins) > 50
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n) != v}
    assert not wrong, f"installed differs from requirements/dev.lock (run make): {wrong}"


def test_every_locked_pin_carries_hashes_and_runtime_is_a_subset():
    for name in ("dev.lock", "runtime.lock"):
        text = (ROOT / "requirements" / name).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
        for entry in entries:
            if entry.startswith("#"):
                continue
            assert "--hash=sha256:" in entry, f"{name}: no hash for {entry.splitlines()[0]}"
    dev, runtime = _pins(ROOT / "requirements/dev.lock"), _pins(ROOT / "requirements/runtime.lock")
    assert {n: dev.get(n) for n in runtime} == runtime
    # The runtime lock is lean: no test, benchmark or Faust packages in the image.
    assert not {"pytest", "faust-streaming", "matplotlib", "hdrhistogram"} & set(runtime)
