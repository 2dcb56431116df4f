"""Locate, configure and open streamscore's Feast feature repos.

Each pipeline (``fraud``, ``pricing``) has a real Feast repo under
``features/repos/<pipeline>/``: ``feature_store.yaml``, one Python definitions file,
``vocab.json`` (string feature -> list of values; code = index) and ``repo.json``
(pipeline name, an optional offline data directory override, the model's default
online feature references, and the declaration of the request-time features that
``features.request`` computes next to these views; tests keep both in sync).

``feature_store.yaml`` takes its environment-dependent parts from the environment, the
way Feast expands ``${VAR}``:

- ``STREAMSCORE_HOME`` - work dir; the file registry lives in
  ``$STREAMSCORE_HOME/feast/<pipeline>/registry.db`` (default ``./.streamscore``);
- ``STREAMSCORE_FEAST_REDIS`` - Feast's Redis connection string (``host:port[,db=N]
  [,password=...][,ssl=true]``); when unset it is derived from ``REDIS_URL``, else
  ``127.0.0.1:6379``.

Feast's own loader leaves an unset ``${VAR}`` as is, so :func:`open_store` fills in these
defaults itself instead of mutating ``os.environ``. Tests and tools that need an isolated
copy (own Feast project, Redis, data dir, registry) use :func:`prepare_repo`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlparse

import yaml

from features.exceptions import FeatureRepoError

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "PIPELINES",
    "check_online_store",
    "data_dir",
    "definitions_file",
    "delete_project_keys",
    "feast_connection_string",
    "feature_refs",
    "feature_views",
    "load_definitions",
    "load_repo_info",
    "load_vocab",
    "open_store",
    "prepare_repo",
    "project_name",
    "redis_url_from_repo",
    "repo_data_dir",
    "repo_path",
    "streamscore_home",
]

PIPELINES = ("fraud", "pricing")
REPOS_ROOT = Path(__file__).resolve().parent / "repos"
DEFAULT_REDIS = "127.0.0.1:6379"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def streamscore_home() -> Path:
    """The work dir: ``$STREAMSCORE_HOME``, default ``./.streamscore`` (absolute)."""
    return Path(os.environ.get("STREAMSCORE_HOME") or ".streamscore").resolve()


def data_dir(pipeline: str) -> Path:
    """Default offline data dir of a pipeline: ``$STREAMSCORE_HOME/data/<pipeline>``."""
    _check_pipeline(pipeline)
    return streamscore_home() / "data" / pipeline


def repo_path(pipeline: str) -> Path:
    """The Feast repo shipped with streamscore for ``pipeline``."""
    _check_pipeline(pipeline)
    return REPOS_ROOT / pipeline


def load_vocab(repo: str | Path) -> dict[str, list[str]]:
    """The repo's vocabulary: string feature name -> values (code = index)."""
    path = _repo_dir(repo) / "vocab.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeatureRepoError(f"cannot read vocabulary {path}: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values()
    ):
        raise FeatureRepoError(f"{path} must map feature names to lists of strings")
    return {str(k): list(v) for k, v in raw.items()}


def load_repo_info(repo: str | Path) -> dict[str, Any]:
    """``repo.json``: pipeline, optional ``data_dir`` override, ``model_feature_refs``."""
    path = _repo_dir(repo) / "repo.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeatureRepoError(f"cannot read {path}: {exc}") from exc
    if info.get("pipeline") not in PIPELINES:
        raise FeatureRepoError(f"{path}: 'pipeline' must be one of {', '.join(PIPELINES)}")
    return dict(info)


def repo_data_dir(repo: str | Path) -> Path:
    """Offline data dir the repo's sources point at (``repo.json`` override or default)."""
    info = load_repo_info(repo)
    override = info.get("data_dir")
    return Path(override).resolve() if override else data_dir(info["pipeline"])


def definitions_file(repo: str | Path) -> Path:
    """The repo's single Python definitions file (``<pipeline>_features.py``)."""
    repo_dir = _repo_dir(repo)
    path = repo_dir / f"{load_repo_info(repo_dir)['pipeline']}_features.py"
    if not path.is_file():
        raise FeatureRepoError(f"feature repo {repo_dir} has no {path.name}")
    return path


def load_definitions(repo: str | Path) -> ModuleType:
    """Import the repo's definitions under a name unique to its path.

    Feast's own parser imports repo files by their bare module name, so two copies of a
    repo in one process would share ``sys.modules`` entries; a per-path name avoids that.
    """
    path = definitions_file(repo)
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    name = f"_streamscore_repo_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FeatureRepoError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FeatureRepoError(f"cannot import {path}: {exc}") from exc
    return module


def feature_views(repo: str | Path) -> list[Any]:
    """The repo's FeatureViews in their declared order (``FEATURE_VIEWS``)."""
    return list(load_definitions(repo).FEATURE_VIEWS)


def feature_refs(pipeline_or_repo: str | Path) -> list[str]:
    """Default online feature references (``view:feature``) of the pipeline's model.

    Every feature of every view in declared order, except timestamp-typed ones (kept
    for audits, not fed to the model as raw epochs). Read from ``repo.json``
    (``model_feature_refs``, checked against the definitions by the tests) so callers
    need not import Feast; a repo without that key falls back to its definitions.
    """
    repo = (
        repo_path(str(pipeline_or_repo))
        if str(pipeline_or_repo) in PIPELINES
        else Path(pipeline_or_repo)
    )
    refs = load_repo_info(repo).get("model_feature_refs")
    if refs is None:
        refs = load_definitions(repo).MODEL_FEATURE_REFS
    return [str(r) for r in refs]


def feast_connection_string(redis_url: str) -> str:
    """Turn ``redis://[:password@]host:port[/db]`` (or ``host:port``) into Feast's format."""
    if "://" not in redis_url:
        return redis_url
    url = urlparse(redis_url)
    if url.scheme not in ("redis", "rediss"):
        raise FeatureRepoError(f"unsupported Redis URL scheme {url.scheme!r}")
    parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
    db = url.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if url.username and url.username != "default":
        parts.append(f"username={unquote(url.username)}")
    if url.password:
        parts.append(f"password={unquote(url.password)}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def _env_defaults() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("STREAMSCORE_HOME", str(streamscore_home()))
    if not env.get("STREAMSCORE_FEAST_REDIS"):
        env["STREAMSCORE_FEAST_REDIS"] = feast_connection_string(
            os.environ.get("REDIS_URL") or DEFAULT_REDIS
        )
    return env


def _expand(text: str, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise FeatureRepoError(f"feature_store.yaml needs environment variable {name}")
        return env[name]

    return _VAR.sub(sub, text)


def load_config_dict(repo: str | Path, redis_url: str | None = None) -> dict[str, Any]:
    """``feature_store.yaml`` with variables expanded (defaults filled) and overrides."""
    path = _repo_dir(repo) / "feature_store.yaml"
    try:
        raw = yaml.safe_load(_expand(path.read_text(), _env_defaults()))
    except (OSError, yaml.YAMLError) as exc:
        raise FeatureRepoError(f"cannot read {path}: {exc}") from exc
    if redis_url:
        raw["online_store"]["connection_string"] = feast_connection_string(redis_url)
    return dict(raw)


def project_name(repo: str | Path) -> str:
    """The Feast project name of a repo."""
    return str(load_config_dict(repo)["project"])


def is_cluster_repo(repo: str | Path) -> bool:
    """Whether the repo's online store is a Redis Cluster (``redis_type: redis_cluster``)."""
    online = load_config_dict(repo).get("online_store") or {}
    return isinstance(online, dict) and str(online.get("redis_type", "")) == "redis_cluster"


def redis_url_from_repo(repo: str | Path) -> str:
    """A ``redis://`` URL equivalent to the repo's (expanded) Feast connection string."""
    conn = str(load_config_dict(repo)["online_store"]["connection_string"])
    hostport, *params = conn.split(",")
    opts = dict(p.split("=", 1) for p in params if "=" in p)
    scheme = "rediss" if opts.get("ssl", "").lower() == "true" else "redis"
    auth = f":{opts['password']}@" if "password" in opts else ""
    return f"{scheme}://{auth}{hostport}/{opts.get('db', 0)}"


def open_store(repo: str | Path, redis_url: str | None = None) -> FeatureStore:
    """A Feast ``FeatureStore`` for ``repo`` (env defaults filled; optional Redis override)."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    repo_dir = _repo_dir(repo)
    raw = load_config_dict(repo_dir, redis_url)
    registry = raw.get("registry")
    reg_path = Path(str(registry["path"] if isinstance(registry, dict) else registry))
    if not reg_path.is_absolute():
        reg_path = repo_dir / reg_path
    reg_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        config = RepoConfig(repo_path=repo_dir, **raw)
    except Exception as exc:  # pydantic's ValidationError and Feast's config errors
        raise FeatureRepoError(f"invalid {repo_dir / 'feature_store.yaml'}: {exc}") from exc
    return FeatureStore(repo_path=str(repo_dir), config=config)


# The entity key serialization ``features.layout`` writes (and Feast 0.67 supports).
KEY_SERIALIZATION_VERSION = 3


def check_online_store(store: FeatureStore) -> list[str] | None:
    """Check what the fast reader and the velocity updater need of a repo's online store;
    the cluster's startup node URLs when it is ``redis_type: redis_cluster``, else None.

    Raises ``FeatureRepoError`` for a store that is not Redis or a key serialization
    version other than the one ``features.layout`` implements (a repo on another version
    would read no rows at all, and degrade every decision without saying why).
    """
    config = store.config
    version = getattr(config, "entity_key_serialization_version", None)
    if version != KEY_SERIALIZATION_VERSION:
        raise FeatureRepoError(
            f"feature repo {store.repo_path}: entity_key_serialization_version {version} is not"
            f" supported (streamscore reads and writes version {KEY_SERIALIZATION_VERSION}:"
            " set it in feature_store.yaml and re-materialize)"
        )
    online = config.online_store
    if getattr(online, "type", "redis") != "redis":
        raise FeatureRepoError(
            f"feature repo {store.repo_path}: online store {online.type!r} is not Redis"
        )
    kind = getattr(online, "redis_type", "redis")
    kind = getattr(kind, "value", kind)
    if kind == "redis":
        return None
    if kind != "redis_cluster":
        raise FeatureRepoError(f"feature repo {store.repo_path}: redis_type {kind} unsupported")
    from features.cluster import cluster_urls

    return cluster_urls(str(online.connection_string))


def prepare_repo(
    pipeline: str,
    workdir: str | Path,
    *,
    project: str | None = None,
    redis_url: str | None = None,
    data_dir: str | Path | None = None,
    registry_path: str | Path | None = None,
) -> Path:
    """Copy the pipeline's repo into ``workdir/<pipeline>`` with its own settings.

    The copy's ``feature_store.yaml`` gets concrete values (no environment needed):
    ``project`` (default: the shipped one), Redis connection string from ``redis_url``
    (default: the expanded environment), and a registry file inside the copy (or
    ``registry_path``). ``data_dir`` (default: the shipped default) is written to the
    copy's ``repo.json``, so its sources read offline data from there. Returns the path.
    """
    src = repo_path(pipeline)
    dst = Path(workdir).resolve() / pipeline
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.db", "data"))
    config = load_config_dict(src, redis_url)
    if project is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", project):
            raise FeatureRepoError(f"invalid Feast project name {project!r}")
        config["project"] = project
    config["registry"]["path"] = str(
        Path(registry_path).resolve() if registry_path else dst / "registry.db"
    )
    (dst / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = load_repo_info(src)
    info["data_dir"] = str(Path(data_dir).resolve()) if data_dir is not None else None
    (dst / "repo.json").write_text(json.dumps(info, indent=2) + "\n")
    return dst


def delete_project_keys(redis_url: str, project: str) -> int:
    """Delete every online-store key of a Feast project (keys end with its name).

    Also removes the velocity state keys of ``features.push`` (same suffix). A key of a
    project whose name *ends with* this one (``x_fraud`` vs ``fraud``) would match too:
    use distinct names (tests use ``unique_name``).
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=b"*" + _glob_escape(project.encode()), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += cast(int, client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += cast(int, client.unlink(*batch))
    finally:
        client.close()
    return deleted


def _glob_escape(raw: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", raw)


def _check_pipeline(pipeline: str) -> None:
    if pipeline not in PIPELINES:
        raise FeatureRepoError(
            f"unknown pipeline {pipeline!r} (expected one of: {', '.join(PIPELINES)})"
        )


def _repo_dir(repo: str | Path) -> Path:
    path = Path(repo).resolve()
    if not (path / "feature_store.yaml").is_file():
        raise FeatureRepoError(f"{path} is not a Feast feature repo (no feature_store.yaml)")
    return path
