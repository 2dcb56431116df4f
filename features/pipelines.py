"""Find a pipeline file from what a user typed: a name (``fraud``) or a path.

Every command that takes ``--pipeline`` resolves it here, so a name and a path mean the
same everywhere. A value that names an existing file, or looks like a path (it has a
folder separator or ends in ``.yaml``/``.yml``), is a path. Anything else is a name,
looked up as ``<name>.yaml`` (then ``<name>.yml``) in these folders, first match wins:

1. each folder of ``$STREAMSCORE_PIPELINES`` (``os.pathsep``-separated);
2. ``./pipelines`` (the current directory's; the container image's ``/app/pipelines``);
3. the ``pipelines/`` folder of the project checkout this package runs from (a source
   checkout or an editable install; an installed wheel has none).

This lives with the Feast repos because the earliest stage that needs a pipeline (the
``features`` commands, through the repo a pipeline file names) sits here; the later
stages import it from here. It reads no more of a file than the Feast repo it names:
the full typed config is ``stream.config.load_pipeline``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from features.exceptions import FeatureRepoError
from schemas.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "find_pipeline",
    "known_pipelines",
    "pipeline_arg",
    "pipeline_kind",
    "pipeline_repo",
    "search_path",
]

ENV_VAR = "STREAMSCORE_PIPELINES"
SUFFIXES = (".yaml", ".yml")
# The project checkout's pipelines/ (features/ is a top-level package next to it).
CHECKOUT = Path(__file__).resolve().parent.parent / "pipelines"


def search_path() -> list[Path]:
    """The folders a pipeline name is looked up in, in order (existing ones only)."""
    dirs = [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    dirs += [Path("pipelines"), CHECKOUT]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in {s.resolve() for s in seen}:
            seen.append(d)
    return seen


def known_pipelines() -> dict[str, Path]:
    """Every pipeline name the search path offers -> its file (first folder wins)."""
    found: dict[str, Path] = {}
    for folder in search_path():
        for suffix in SUFFIXES:
            for path in sorted(folder.glob(f"*{suffix}")):
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(SUFFIXES) or Path(text).is_file()


def find_pipeline(ref: str | Path) -> Path:
    """The pipeline file ``ref`` means: a path as given (whoever reads it says if it is
    missing, as ``open`` would), or the file of a known name; ``ConfigError`` if none."""
    text = str(ref).strip()
    if not text:
        raise ConfigError("empty pipeline: give a name (e.g. fraud) or a path to a YAML file")
    if _looks_like_path(text):
        return Path(text).expanduser()
    for folder in search_path():
        for suffix in SUFFIXES:
            path = folder / f"{text}{suffix}"
            if path.is_file():
                return path
    names = ", ".join(known_pipelines()) or "none"
    folders = ", ".join(str(d.resolve()) for d in search_path()) or f"none (set ${ENV_VAR})"
    raise ConfigError(f"no pipeline named {text!r} (known: {names}; looked in {folders}; "
                      "or give a path to a pipeline file)")


def pipeline_arg(text: str) -> Path:
    """``argparse`` type of every ``--pipeline``: the file, or a one-line usage error."""
    try:
        return find_pipeline(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pipeline_repo(path: str | Path) -> Path:
    """The Feast repo a pipeline file names (``features.repo``, relative to the file)."""
    if not Path(path).is_file():
        raise ConfigError(f"pipeline file not found: {path}")
    try:
        doc = yaml.safe_load(Path(path).read_text())
        value = doc["features"]["repo"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise FeatureRepoError(f"{path}: cannot read its 'features.repo' ({exc})") from None
    repo = Path(str(value)).expanduser()
    if not repo.is_absolute():  # as stream.config resolves it: against the file's folder
        repo = Path(path).resolve().parent / repo
    if not repo.is_dir():
        raise FeatureRepoError(f"{path}: feature repo {value!r} not found ({repo})")
    return repo.resolve()


def pipeline_kind(path: str | Path) -> str:
    """Which shipped domain (fraud, pricing) a pipeline's Feast repo belongs to: what the
    synthetic data, training defaults and vocabulary are chosen by."""
    from features.repo import load_repo_info

    return str(load_repo_info(pipeline_repo(path))["pipeline"])
