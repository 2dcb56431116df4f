"""numba's cache directory is keyed by the kernel sources: an edited callee is recompiled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from features import jitcache

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "features", "scorers", "stream")
CALL = "jitcache.configure()"

# kernels.finish_rows calls objectives.apply_transform: numba links the callee's machine
# code into the caller's cache entry, which numba itself keys by kernels.py alone.
PROBE = """
import json
import numpy as np
from features import jitcache
from scorers import kernels
from scorers.objectives import SIGMOID
out = np.zeros((1, 1))
kernels.finish_rows(out, 0, 1, False, 1.0, SIGMOID, 1.0)
print(json.dumps({"value": float(out[0, 0]), "dir": str(jitcache.cache_dir())}))
"""
SIGMOID_LINE = "row[k] = 1.0 / (1.0 + math.exp(-param * row[k]))"
EDITED_LINE = "row[k] = 2.0 / (1.0 + math.exp(-param * row[k]))"


def test_every_kernel_module_configures_the_cache_before_its_first_kernel() -> None:
    kernel_modules = [p for p, data in jitcache.kernel_sources().items()
                      if jitcache.KERNEL_MARK.search(data)]
    assert len(kernel_modules) >= 9  # resp, 5 in scorers, 3 drift modules today
    for path in kernel_modules:
        text = path.read_text()
        first_kernel = jitcache.KERNEL_MARK.search(text.encode())
        assert first_kernel is not None
        call = text.find(f"\n{CALL}")
        assert 0 <= call < first_kernel.start(), f"{path}: {CALL} must come before its kernels"


def test_sources_include_what_kernels_import() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in jitcache.kernel_sources()}
    # constants compiled in (ir), callees in other modules (objectives, drift_stats)
    assert {"scorers/ir.py", "scorers/objectives.py", "scorers/kernels.py",
            "features/resp.py"} <= names
    assert any(n.startswith("stream/") and "drift" in n and "stats" in n for n in names)
    assert "stream/cli.py" not in names  # no kernels and not imported by one
    assert "features/jitcache.py" not in names  # imported by every kernel, compiles nothing


def _copy_tree(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "repos", "*.parquet")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dst / package, ignore=ignore)
    return dst


def _probe(tree: Path, cache: Path) -> dict[str, object]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_an_edited_callee_in_another_module_is_recompiled(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "tree")
    cache = tmp_path / "numba"
    callee = tree / "scorers" / "objectives.py"
    original = callee.read_text()
    assert original.count(SIGMOID_LINE) == 1

    first = _probe(tree, cache)
    assert first["value"] == 0.5
    assert Path(str(first["dir"])).parent == cache  # the user's base, keyed below it

    callee.write_text(original.replace(SIGMOID_LINE, EDITED_LINE))
    edited = _probe(tree, cache)
    assert edited["value"] == 1.0, "kernels.finish_rows ran the cached, stale callee"
    assert edited["dir"] != first["dir"]

    callee.write_text(original)
    restored = _probe(tree, cache)
    assert restored == first  # the first key again, its cache entries reused
