"""The model registry: versioned LightGBM text models in a directory, with aliases.

Layout under the root (default ``$STREAMSCORE_HOME/models``, ``./.streamscore/models``)::

    <name>/<version>/model.txt       LightGBM text model (never pickle)
    <name>/<version>/metadata.json   sha256 of model.txt, features, objective, training
                                     summary, drift reference statistics, metrics, ...
    <name>/aliases.json              {"champion": 3, "challenger": 4}

References: ``name@3``, ``name@latest``, ``name@champion`` (any alias), or a bare ``name``
(its champion if set, else its latest version). Loading re-hashes ``model.txt`` and
refuses a file whose sha256 differs from the metadata.

Writes are atomic so a running worker can read while another process registers or
promotes: a version is written into a hidden staging directory and renamed into place
(the rename also picks the version number without a race), and ``aliases.json`` is
replaced with ``os.replace`` under a lock file. Workers notice alias moves cheaply with
:meth:`Registry.fingerprint` (a small read and a ``stat``) or a :class:`RefWatcher`.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scorers.exceptions import IntegrityError, ModelNotFoundError, RegistryError
from scorers.modelfile import model_text_info, read_model_text

__all__ = [
    "IntegrityError",
    "ModelNotFoundError",
    "ModelVersion",
    "RefWatcher",
    "Registry",
    "RegistryError",
    "default_root",
    "model_text_info",
    "parse_ref",
    "read_model_text",
]

MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"

log = logging.getLogger("streamscore.registry")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_RESERVED_ALIASES = frozenset({"latest"})


def default_root() -> Path:
    """``$STREAMSCORE_HOME/models``, with ``STREAMSCORE_HOME`` defaulting to ``./.streamscore``."""
    return Path(os.environ.get("STREAMSCORE_HOME") or ".streamscore") / "models"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name@selector`` into (name, selector); a bare name gives (name, None)."""
    name, sep, selector = ref.strip().partition("@")
    if not _NAME_RE.match(name):
        raise RegistryError(
            f"invalid model reference {ref!r}: expected NAME, NAME@VERSION, NAME@latest "
            "or NAME@ALIAS (names use letters, digits, '_', '.', '-')"
        )
    if sep and not selector:
        raise RegistryError(f"invalid model reference {ref!r}: nothing after '@'")
    return name, (selector if sep else None)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: where it lives and what its metadata says."""

    name: str
    version: int
    path: Path  # the version's directory
    sha256: str
    metadata: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        """The pinned reference ``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata.get("feature_names", []))

    @property
    def reference(self) -> dict[str, Any] | None:
        """Drift reference statistics (shared shape), or None if none were recorded."""
        ref = self.metadata.get("reference")
        return ref if isinstance(ref, dict) else None

    def read_text(self) -> str:
        """The model text, after checking its sha256 against the metadata."""
        try:
            data = self.model_path.read_bytes()
        except OSError as exc:
            raise RegistryError(
                f"cannot read {self.ref}: {exc.strerror}: {self.model_path}"
            ) from exc
        actual = _sha256_bytes(data)
        if actual != self.sha256:
            raise IntegrityError(
                f"refusing to load {self.ref}: sha256 of {self.model_path} is {actual[:16]}..., "
                f"metadata says {self.sha256[:16]}... (file changed after registration)"
            )
        return data.decode("utf-8")


class Registry:
    """A directory of model versions and aliases (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ----------------------------------------------------------------- reading

    def names(self) -> list[str]:
        """Registered model names, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[int]:
        """Version numbers of ``name``, ascending (empty if unknown)."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version of ``name`` (re-read from disk on every call)."""
        path = self.root / name / ALIASES_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"corrupt alias file {path}: {exc}") from exc
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in raw.items()
        ):
            raise RegistryError(f"corrupt alias file {path}: expected {{alias: version}}")
        return dict(raw)

    def get(self, name: str, version: int) -> ModelVersion:
        """The exact version ``name@version``."""
        d = self.root / name / str(version)
        meta_path = d / METADATA_FILE
        if not d.is_dir():
            if not (self.root / name).is_dir():
                raise self._unknown_name(name)
            known = ", ".join(map(str, self.versions(name))) or "none"
            raise ModelNotFoundError(f"model {name!r} has no version {version} (versions: {known})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RegistryError(f"corrupt registry entry {name}@{version}: no {meta_path}") from exc
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"corrupt metadata of {name}@{version} ({meta_path}): {exc}"
            ) from exc
        sha = meta.get("sha256") if isinstance(meta, dict) else None
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise RegistryError(
                f"corrupt metadata of {name}@{version} ({meta_path}): no valid 'sha256'"
            )
        return ModelVersion(name=name, version=version, path=d, sha256=sha, metadata=meta)

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference points to now (aliases are re-read every call)."""
        name, selector = parse_ref(ref)
        if selector is None:
            aliases = self.aliases(name)
            if "champion" in aliases:
                return self.get(name, aliases["champion"])
            selector = "latest"
        if selector.isdigit():
            return self.get(name, int(selector))
        if selector == "latest":
            versions = self.versions(name)
            if not versions:
                raise self._unknown_name(name)
            return self.get(name, versions[-1])
        aliases = self.aliases(name)
        if selector not in aliases:
            if not (self.root / name).is_dir():
                raise self._unknown_name(name)
            known = ", ".join(sorted(aliases)) or "none"
            raise ModelNotFoundError(
                f"model {name!r} has no alias {selector!r} (aliases: {known}); point it at a "
                f"version with 'streamscore model promote {name} VERSION --alias {selector}'"
            )
        return self.get(name, aliases[selector])

    def load_text(self, ref: str, expected_sha256: str | None = None) -> str:
        """The verified model text of ``ref``; optionally pin the expected sha256 too."""
        mv = self.resolve(ref)
        _check_pin(mv, expected_sha256)
        return mv.read_text()

    def load_model(
        self, ref: str, expected_sha256: str | None = None, **compile_options: Any
    ) -> tuple[ModelVersion, Any]:
        """Resolve, verify and compile ``ref``: (its version, a ``CompiledModel``)."""
        mv = self.resolve(ref)
        _check_pin(mv, expected_sha256)
        from scorers.compiled import compile_lightgbm

        return mv, compile_lightgbm(mv.read_text(), **compile_options)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """Every version (of one model, or of all), sorted by name then version."""
        names = [name] if name is not None else self.names()
        if name is not None and not (self.root / name).is_dir():
            raise self._unknown_name(name)
        return [self.get(n, v) for n in names for v in self.versions(n)]

    def fingerprint(self, name: str) -> tuple[bytes, int, int]:
        """Changes whenever ``name`` gains a version or an alias moves (cheap: one small
        read and one ``stat``).

        The alias file's content (not its mtime: two promotions within one clock tick
        would share it) plus the directory's mtime and link count (each new version
        directory adds a link, so even same-tick registrations are seen).
        """
        d = self.root / name
        try:
            aliases = (d / ALIASES_FILE).read_bytes()
        except FileNotFoundError:
            aliases = b""
        try:
            st = os.stat(d)
        except FileNotFoundError:
            return aliases, 0, 0
        return aliases, st.st_mtime_ns, st.st_nlink

    def watch(self, ref: str) -> RefWatcher:
        """A watcher that tells when ``ref`` starts pointing at another version."""
        return RefWatcher(self, ref)

    # ----------------------------------------------------------------- writing

    def register(
        self,
        model: Any,
        name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        aliases: Sequence[str] = (),
    ) -> ModelVersion:
        """Store a new version of ``name`` and return it.

        ``model`` is LightGBM model text, a path to a text model file, or a
        ``lightgbm.Booster``. ``metadata`` adds caller facts (training summary,
        ``reference`` statistics, metrics, params...); the registry fills in name,
        version, sha256, created_at and what the model text says (features, objective,
        trees), which win over caller values.
        """
        if not _NAME_RE.match(name):
            raise RegistryError(
                f"invalid model name {name!r} (letters, digits, '_', '.', '-'; max 128)"
            )
        if isinstance(aliases, str):
            aliases = (aliases,)
        for alias in aliases:
            self._check_alias(alias)
        text, source = read_model_text(model)
        try:
            info = model_text_info(text)
        except RegistryError as exc:
            raise RegistryError(f"{source}: {exc}") from exc
        data = text.encode("utf-8")
        extra: dict[str, Any] = dict(metadata or {})
        if extra.get("reference") is not None:
            from scorers.refstats import validate_reference

            try:
                validate_reference(extra["reference"], info["feature_names"])
            except ValueError as exc:
                raise RegistryError(f"bad reference statistics: {exc}") from exc
        # Identity first (the order a reader of metadata.json wants), then what the
        # model text says, then the caller's facts; registry-owned keys cannot be
        # overridden by the caller.
        meta: dict[str, Any] = {
            "name": name,
            "version": 0,  # set below, once the number is won
            "sha256": _sha256_bytes(data),
            "created_at": dt.datetime.now(dt.UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "format": "lightgbm-text",
            "source": extra.pop("source", source),
            **info,
        }
        meta.update({k: v for k, v in extra.items() if k not in meta})
        name_dir = self.root / name
        name_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=name_dir))
        try:
            staging.chmod(0o755)  # mkdtemp makes it 0700; versions are meant to be shared
            (staging / MODEL_FILE).write_bytes(data)
            version = (self.versions(name) or [0])[-1] + 1
            while True:
                meta["version"] = version
                _write_json(staging / METADATA_FILE, meta)
                try:
                    # Renaming a directory onto an existing non-empty one fails, so two
                    # concurrent registrations never share a number.
                    os.rename(staging, name_dir / str(version))
                    break
                except OSError:
                    if not (name_dir / str(version)).exists():
                        raise
                    version += 1
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(name_dir)
        for alias in aliases:
            self.promote(name, version, alias)
        return self.get(name, version)

    def promote(self, name: str, version: int, alias: str = "champion") -> ModelVersion:
        """Point ``alias`` of ``name`` at ``version`` (atomically) and return that version."""
        self._check_alias(alias)
        mv = self.get(name, version)
        mv.read_text()  # never promote a file that no longer matches its sha256
        with self._locked(name):
            aliases = self.aliases(name)
            aliases[alias] = int(version)
            _write_json_atomic(self.root / name / ALIASES_FILE, aliases)
        return mv

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``alias`` of ``name``; unknown aliases are an error."""
        with self._locked(name):
            aliases = self.aliases(name)
            if alias not in aliases:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            del aliases[alias]
            _write_json_atomic(self.root / name / ALIASES_FILE, aliases)

    # ----------------------------------------------------------------- helpers

    def _unknown_name(self, name: str) -> ModelNotFoundError:
        known = ", ".join(self.names()) or "none"
        return ModelNotFoundError(
            f"no model named {name!r} in registry {self.root} (models: {known}); "
            "train one with 'streamscore model train' or add one with 'streamscore model register'"
        )

    @staticmethod
    def _check_alias(alias: str) -> None:
        if not _ALIAS_RE.match(alias) or alias in _RESERVED_ALIASES:
            raise RegistryError(
                f"invalid alias {alias!r}: must start with a letter, use letters, digits, "
                "'_', '.', '-', and not be 'latest'"
            )

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        # An advisory lock serializes read-modify-write of aliases.json between
        # processes; readers never need it because the file is replaced atomically.
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class RefWatcher:
    """Follows a reference (e.g. ``fraud@champion``) for a running worker.

    ``poll()`` costs one small read and one ``stat`` while nothing changed; when the
    registry changed and the reference now resolves to another version, it returns that
    version (and remembers it), else None. If the new target cannot be resolved (alias to a broken
    version, corrupt metadata) it logs a warning, keeps ``current``, records
    ``last_error`` and returns None: a running worker keeps scoring with what it has.
    """

    def __init__(self, registry: Registry, ref: str) -> None:
        self.registry = registry
        self.ref = ref
        self.name, _ = parse_ref(ref)
        self._fp = registry.fingerprint(self.name)
        self.current = registry.resolve(ref)
        self.last_error: RegistryError | None = None

    def poll(self) -> ModelVersion | None:
        fp = self.registry.fingerprint(self.name)
        if fp == self._fp:
            return None
        self._fp = fp
        try:
            mv = self.registry.resolve(self.ref)
            if mv.version != self.current.version:
                mv.read_text()  # refuse a target whose file fails its sha256
        except RegistryError as exc:
            self.last_error = exc
            log.warning("keeping %s: %s", self.current.ref, exc)
            return None
        self.last_error = None
        if mv.version == self.current.version:
            return None
        self.current = mv
        return mv


def _check_pin(mv: ModelVersion, expected_sha256: str | None) -> None:
    if expected_sha256 is not None and expected_sha256.lower() != mv.sha256:
        raise IntegrityError(
            f"{mv.ref} has sha256 {mv.sha256[:16]}..., expected {expected_sha256[:16]}..."
        )


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write temp file + fsync + os.replace: readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; workers may run as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
