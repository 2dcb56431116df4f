"""numba's on-disk cache keyed by the content of every kernel module, set in one place.

numba keys a cached kernel by its own source file only. A kernel that calls or inlines
a function from another module (``drift_ring`` → ``drift_stats._accumulate``,
``walker`` → ``kernels.finish_rows``) or reads another module's constant
(``scorers.ir``) keeps its old machine code when only that other module changes. So
every process points numba at ``<base>/<key>``, where the key digests the source of
every project module that defines a kernel with numba's disk cache on, of every project
module those import (transitively), and the numba and llvmlite versions: any edit that
could change compiled code selects a fresh directory, and undoing it selects the old one.

``<base>`` is ``$NUMBA_CACHE_DIR`` when set (the image and the Kubernetes manifests set
it), else ``$XDG_CACHE_HOME/streamscore/numba`` (``~/.cache/streamscore/numba``).
Directories of older keys are left in place: removing the base is always safe.

numba reads ``numba.config.CACHE_DIR`` when a caching dispatcher is created
(the decorator, at import), so each kernel module calls :func:`configure` before its
first decorator; ``tests/features/test_jitcache.py`` checks that every one does.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

__all__ = ["KERNEL_MARK", "cache_dir", "configure", "digest", "kernel_sources"]

# A module holds cached kernels when a numba decorator in it asks for the disk cache.
KERNEL_MARK = re.compile(rb"njit\([^)]*\bcache=True")
# Packages whose modules may hold kernels; a kernel module's imports are followed into
# any project package (schemas too: a constant there would be compiled in as well).
_KERNEL_PACKAGES = ("features", "scorers", "stream")
_PROJECT_PACKAGES = ("schemas", *_KERNEL_PACKAGES)
_SELF = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(_SELF))
_NAMES = "|".join(_PROJECT_PACKAGES)
# ``from pkg.mod import a, b`` (parenthesised over several lines too) and ``import pkg.mod``.
_FROM = re.compile(rf"^[ \t]*from[ \t]+((?:{_NAMES})(?:\.\w+)*)[ \t]+import[ \t]+"
                   r"(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(rf"^[ \t]*import[ \t]+((?:{_NAMES})(?:\.\w+)*)", re.M)


@functools.cache
def _module_file(name: str) -> str | None:
    """The source file of project module ``a.b.c``, if it exists."""
    base = os.path.join(_ROOT, *name.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imports(text: str) -> set[str]:
    """Project modules a source text imports (``from pkg import mod`` counts ``pkg.mod``)."""
    found: set[str] = set()
    for module, names in _FROM.findall(text):
        target = _module_file(module)
        for name in re.findall(r"\w+", re.sub(r"#[^\n]*", "", names)):
            # ``from scorers import kernels`` names a submodule: the package's own
            # ``__init__`` defines nothing the kernels use.
            sub = _module_file(f"{module}.{name}")
            if sub is not None:
                found.add(sub)
            elif target is not None:
                found.add(target)
    for module in _IMPORT.findall(text):
        target = _module_file(module)
        if target is not None:
            found.add(target)
    return found


def _package_modules(package: str) -> list[str]:
    """Every ``.py`` file of a package and its subpackages (folders with ``__init__.py``)."""
    out: list[str] = []
    for folder, dirs, files in os.walk(os.path.join(_ROOT, package)):
        if "__init__.py" not in files:
            dirs.clear()  # not a package (Feast repos, data): no kernels can live there
            continue
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out.extend(os.path.join(folder, f) for f in files if f.endswith(".py"))
    return out


def kernel_sources() -> dict[Path, bytes]:
    """Every kernel module and every project module it imports, transitively: path → bytes."""
    return {Path(p): data for p, data in _sources().items()}


def _sources() -> dict[str, bytes]:
    sources: dict[str, bytes] = {}
    todo: list[str] = []
    for package in _KERNEL_PACKAGES:
        for path in _package_modules(package):
            with open(path, "rb") as f:
                data = f.read()
            if b"cache=True" in data and KERNEL_MARK.search(data):  # substring first: cheaper
                sources[path] = data
                todo.append(path)
    while todo:
        for dep in _imports(sources[todo.pop()].decode()):
            if dep not in sources and dep != _SELF:  # this module compiles into nothing
                with open(dep, "rb") as f:
                    sources[dep] = f.read()
                todo.append(dep)
    return sources


def digest() -> str:
    """A short hex key of the kernel sources plus the numba and llvmlite versions."""
    import llvmlite
    import numba

    h = hashlib.sha256(f"numba {numba.__version__} llvmlite {llvmlite.__version__}\n".encode())
    for path, data in sorted(_sources().items()):
        name = os.path.relpath(path, _ROOT).replace(os.sep, "/")
        h.update(f"{name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()[:16]


def _base() -> Path:
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "streamscore" / "numba"


@functools.cache
def cache_dir() -> Path:
    """``<base>/<digest>``: this process's numba cache directory (computed once)."""
    return _base() / digest()


def configure() -> Path:
    """Point numba's cache at :func:`cache_dir`; call before the module's first kernel.

    Called by every kernel module, so it runs once per module import: the digest is
    computed once per process, and the setting is re-applied each time because numba
    resets ``config.CACHE_DIR`` from the environment whenever a ``NUMBA_*`` variable
    changes.
    """
    from numba.core import config

    where = cache_dir()
    config.CACHE_DIR = str(where)  # type: ignore[attr-defined]  # set by numba via globals()
    return where
