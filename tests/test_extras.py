"""The worker runs without the optional extras; a command that needs one says which."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.errors import EXTRAS
from stream.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_an_extra_at_import_time() -> None:
    # Every module of the four packages, and the whole CLI parser, in a fresh interpreter.
    code = (
        "import importlib, pkgutil, sys\n"
        "import stream.cli\n"
        "stream.cli.build_parser()\n"
        "for pkg in ('schemas', 'features', 'scorers', 'stream'):\n"
        "    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + '.'):\n"
        "        if not info.name.endswith('.__main__'):  # running it is the CLI\n"
        "            importlib.import_module(info.name)\n"
        f"print(sorted(m for m in {sorted(EXTRAS)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_faust_without_its_extra_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "faust", None)  # import faust -> ModuleNotFoundError
    code = main(["faust", "--pipeline", str(ROOT / "pipelines" / "fraud.yaml")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "pip install 'streamscore[faust]'" in err
