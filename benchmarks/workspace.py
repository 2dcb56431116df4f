"""Benchmark workspace: data, Feast repo, online rows and model, made once and reused.

A benchmark run from a fresh clone needs what a user's deployment already has: offline
data, a Feast repo applied to Redis with its rows online, and a champion model. This
module builds them in a workspace directory (default
``$STREAMSCORE_HOME/bench/e2e/<pipeline>-<size>``) with the project's own functions
(``features.synthetic.generate``, ``features.repo.prepare_repo``, Feast's ``apply`` and
``write_to_online_store``, ``scorers.train.train_and_register``) and reuses them on the
next run. The Feast project is private to the workspace, so its Redis keys never mix
with a user's; ``cleanup_online`` removes them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SIZES", "Workspace", "cleanup_online", "prepare_workspace", "write_pipeline_file"]

# name -> generate() sizes. "tiny" is for tests, "quick" for make bench.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"rows": 4_000, "cards": 1_000, "merchants": 200, "skus": 1_000, "stores": 20},
    "quick": {"rows": 15_000, "cards": 10_000, "merchants": 1_000, "skus": 3_000, "stores": 40},
    "full": {"rows": 200_000, "cards": 100_000, "merchants": 5_000, "skus": 20_000, "stores": 200},
}
# Generated rows are stamped 24-26 h before generation; views keep them 7 days (fraud's
# velocity view only 2 h either way). Regenerate well before that to keep features fresh.
MAX_DATA_AGE_S = 3 * 86_400
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    """Everything a benchmark run needs to point both stacks at the same setup."""

    pipeline: str
    root: Path
    data_dir: Path
    repo: Path
    project: str
    redis_url: str
    models: Path
    model_ref: str
    model_path: Path
    timings: dict[str, float]


def _project_for(root: Path, pipeline: str) -> str:
    digest = hashlib.sha1(str(root).encode(), usedforsecurity=False).hexdigest()[:8]
    return f"bench_{pipeline}_{digest}"


def _stale(path: Path) -> bool:
    return not path.is_file() or time.time() - path.stat().st_mtime > MAX_DATA_AGE_S


def prepare_workspace(
    pipeline: str, root: str | Path, redis_url: str, *, size: str = "quick",
    progress: bool = True, num_trees: int | None = None,
) -> Workspace:
    """Build (or reuse) data, online rows and model for ``pipeline`` under ``root``."""
    from features.repo import open_store, prepare_repo
    from features.synthetic import generate
    from scorers.registry import ModelNotFoundError, Registry
    from scorers.train import TrainOptions, train_and_register

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    fresh = _stale(data / "events.parquet") or _stale(data / "training.parquet")
    if fresh:
        generate(pipeline, data, progress=progress, **SIZES[size])
        timings["generate_s"] = time.perf_counter() - t

    project = _project_for(root, pipeline)
    # The Feast registry lives outside the repo copy, which prepare_repo rewrites.
    repo = prepare_repo(pipeline, root / "repo", project=project, redis_url=redis_url,
                        data_dir=data, registry_path=root / "feast_registry.db")
    marker = root / "online.json"
    state = {"redis_url": redis_url, "project": project,
             "data_mtime": (data / "events.parquet").stat().st_mtime}
    t = time.perf_counter()
    store = open_store(repo)
    if fresh or not _marker_ok(marker, state) or not _online_present(store, repo, data):
        _apply_and_load(store, repo, data)
        marker.write_text(json.dumps(state))
        timings["online_load_s"] = time.perf_counter() - t

    models = root / "models"
    registry = Registry(models)
    ref = f"{pipeline}@champion"
    try:
        if fresh:
            raise ModelNotFoundError("retrain on fresh data")
        version = registry.resolve(ref)
    except ModelNotFoundError:
        t = time.perf_counter()
        version = train_and_register(
            pipeline=pipeline, data=data / "training.parquet", registry=registry,
            options=TrainOptions(num_trees=num_trees, progress=progress), promote=["champion"],
        )
        timings["train_s"] = time.perf_counter() - t
    return Workspace(pipeline, root, data, repo, project, redis_url, models, ref,
                     version.model_path, timings)


def _marker_ok(marker: Path, state: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == state)
    except (OSError, ValueError):
        return False


def _online_present(store: Any, repo: Path, data: Path) -> bool:
    """Whether one known entity's row is online (Redis may have been flushed)."""
    import pyarrow.parquet as pq

    from features.repo import feature_refs, load_definitions

    try:
        entities = load_definitions(repo).ENTITIES
        events = pq.read_table(data / "events.parquet").slice(0, 1).to_pylist()[0]
        row = {e.join_key: events[e.join_key] for e in entities}
        got = store.get_online_features(features=feature_refs(repo)[:1],
                                        entity_rows=[row]).to_dict()
    except Exception:  # any failure means: reload
        return False
    values = [v for k, v in got.items() if k not in row]
    return bool(values) and values[0][0] is not None


def _apply_and_load(store: Any, repo: Path, data: Path) -> None:
    """``feast apply`` the repo's objects and write every view's offline rows online."""
    import pandas as pd

    from features.repo import load_definitions

    defs = load_definitions(repo)
    store.apply([*defs.ENTITIES, *defs.FEATURE_VIEWS])
    for view in defs.FEATURE_VIEWS:
        path = data / f"{view.name}.parquet"
        if not path.is_file():
            continue
        frame = pd.read_parquet(path)
        if len(frame):
            store.write_to_online_store(view.name, frame)


def cleanup_online(ws: Workspace) -> int:
    """Delete the workspace's Feast project keys from Redis; returns how many."""
    from features.repo import delete_project_keys

    (ws.root / "online.json").unlink(missing_ok=True)
    return delete_project_keys(ws.redis_url, ws.project)


def write_pipeline_file(
    ws: Workspace, path: str | Path, *, bootstrap: str, topics: dict[str, str], group: str,
    metrics_port: int, budget_ms: float | None = None, partitions: int = 4,
    kafka_settings: dict[str, Any] | None = None, reason_codes: int | None = None,
    features_timeout_ms: float | None = None,
) -> Path:
    """A pipeline YAML for the worker: the shipped one pointed at this run's setup."""
    import yaml

    base = yaml.safe_load((PROJECT_ROOT / "pipelines" / f"{ws.pipeline}.yaml").read_text())
    base["kafka"]["bootstrap_servers"] = bootstrap
    base["kafka"]["group_id"] = group
    base["kafka"]["settings"] = {"client.id": f"bench-{group}", **(kafka_settings or {})}
    base["topics"] = {**base["topics"], **topics, "partitions": partitions}
    base["features"]["repo"] = str(ws.repo)
    base["features"]["redis_url"] = ws.redis_url
    base["model"]["ref"] = ws.model_ref
    base["model"]["registry"] = str(ws.models)
    base["metrics"] = {"port": metrics_port, "host": "127.0.0.1"}
    if budget_ms is not None:
        base["budget_ms"] = budget_ms
    if reason_codes is not None:
        base["model"]["reason_codes"] = reason_codes
    if features_timeout_ms is not None:
        base["features"]["timeout_ms"] = features_timeout_ms
    out = Path(path)
    out.write_text(yaml.safe_dump(base, sort_keys=False))
    return out
