"""Build a pipeline's Kafka-free stages once: model, online reader, request features, core.

The confluent-kafka worker (``stream.worker``) and the Faust app (``stream.faust_app``)
run the same stages; this module is where they are put together, so both score with
the same model, the same feature plan and the same policy.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.config import PipelineConfig
from stream.core.pipeline import BatchCore, LoadedModel

__all__ = ["Stages", "build_stages", "is_push_view", "load_model", "warm_up_reader"]

log = logging.getLogger(__name__)


def load_model(registry: Any, ref: str, version: Any = None) -> LoadedModel:
    """Resolve ``ref`` in the registry (or take ``version``), verify and compile it."""
    from scorers import compile_lightgbm

    mv = version if version is not None else registry.resolve(ref)
    scorer = compile_lightgbm(mv.read_text())
    # The kernels are loaded from numba's cache on first call (~1-2 s of CPU): do it now,
    # not on the first batch of live traffic (and not after a hot reload's swap).
    row = np.zeros((1, len(scorer.feature_names)))
    scorer.predict(row)
    if hasattr(scorer, "contributions"):
        scorer.contributions(row)
    return LoadedModel(mv.name, str(mv.version), mv.sha256, scorer, mv.reference)


def warm_up_reader(reader: Any) -> None:
    """Open the online store's connection before the first batch.

    Its set-up time must not count against the first batch's read timeout (and fail it
    as "store down"). A store that does not answer is logged, not fatal: decisions are
    degraded until it does.
    """
    kinds = getattr(reader, "join_key_kinds", {})
    # A value of each join key's own type (from the Feast registry): any id will do.
    entities: dict[str, Any] = {k: [0] if kinds.get(k) == "int" else ["warm-up"]
                                for k in reader.join_keys}
    got = reader.read(entities)
    if got.status != "ok":
        log.warning("online store not answering at start-up (%s); decisions will be "
                    "degraded until it does", got.error)


def is_push_view(view: Any) -> bool:
    """Whether a Feast view is fed by a push source (the streaming velocity features).

    Such a view has no row until the entity's first event: a missing row there means
    "no recent activity", not a degraded read.
    """
    src = getattr(view, "stream_source", None)
    return type(src).__name__ == "PushSource"


@dataclass
class Stages:
    """Everything between the input bytes and the output records, built once."""

    config: PipelineConfig
    worker_id: str
    redis_url: str | None
    registry: Any  # scorers.registry.Registry
    watcher: Any  # its RefWatcher on config.model.ref (hot reload)
    model: LoadedModel
    challenger: LoadedModel | None
    reader: Any  # features.online.OnlineReader
    refs: list[str]
    core: BatchCore
    velocity: Any  # features.push.VelocityUpdater | None
    challenger_watcher: Any = None  # RefWatcher on config.model.challenger (hot reload)

    def update_velocity(self, res: Any) -> Any:
        """Fold a scored batch's events into the pipeline's streaming aggregates.

        Returns the updater's result (never raises on Redis faults); None when the
        pipeline has no velocity features.
        """
        if self.velocity is None:
            return None
        cols = res.columns
        agg = self.config.features.aggregates
        assert agg is not None
        amount = np.nan_to_num(np.asarray(cols[agg.amount_field], dtype=np.float64))
        where: dict[str, Any] = {}
        if res.sources is not None:
            # Each event's input (topic, partition, offset): the updater skips what it
            # already applied, so a redelivered batch never counts twice.
            src = [res.sources[i] for i in res.indices]
            where = {"topics": [s[0] for s in src],
                     "partitions": np.fromiter((s[1] for s in src), np.int64, len(src)),
                     "offsets": np.fromiter((s[2] for s in src), np.int64, len(src))}
        key = cols.get(agg.key_field + "__int", cols[agg.key_field])
        got = self.velocity.update(key, amount, cols[self.config.event.time_field],
                                   now=res.now, **where)
        refused = getattr(got, "refused", None)
        if refused is not None and len(refused):  # the core refuses them first
            log.warning("velocity update refused %d events dated in the future",
                        len(refused))
        return got

    def close(self) -> None:
        """Release the online store connection."""
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


def build_stages(
    config: PipelineConfig,
    *,
    redis_url: str | None = None,
    registry_root: str | None = None,
    worker_id: str | None = None,
) -> Stages:
    """Resolve Redis and the registry, compile the model, plan the feature matrix."""
    from features.online import OnlineReader
    from features.repo import feature_refs, feature_views, is_cluster_repo, load_vocab
    from features.request import RequestFeatures
    from scorers.registry import Registry, default_root
    from stream.endpoints import resolve_redis_url

    c = config
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    repo = c.resolve_path(c.features.repo)
    explicit = redis_url or c.features.redis_url.strip() or os.environ.get("REDIS_URL", "")
    # A Redis Cluster repo is reached through its own startup nodes (feature_store.yaml),
    # unless a URL is given on purpose: dev up's single Redis is never the right fallback.
    if not explicit and is_cluster_repo(repo):
        redis_url = None
    else:
        redis_url = explicit or resolve_redis_url("")

    # Model: registry -> verified text -> compiled kernels; a watcher for hot reload.
    root = registry_root or (str(c.resolve_path(c.model.registry)) if c.model.registry
                             else str(default_root()))
    registry = Registry(root)
    watcher = registry.watch(c.model.ref)
    model = load_model(registry, c.model.ref, watcher.current)
    challenger_watcher = registry.watch(c.model.challenger) if c.model.challenger else None
    challenger = (load_model(registry, c.model.challenger, challenger_watcher.current)
                  if challenger_watcher else None)

    # Features: the Feast repo's refs (all of them, so a reloaded model needing another
    # one still finds it), the request-time features, the velocity updater.
    refs = list(c.features.refs) or feature_refs(repo)
    reader = OnlineReader(repo, refs, redis_url, timeout_ms=c.features.timeout_ms)
    warm_up_reader(reader)
    request = RequestFeatures(c.features.request, load_vocab(repo)) if c.features.request \
        else None
    optional = [v.name for v in feature_views(repo) if is_push_view(v)]
    core = BatchCore(
        c, model, reader=reader, request=request,
        online_names=[r.split(":", 1)[1] for r in refs], optional_views=optional,
        challenger=challenger, worker_id=worker_id,
    )
    velocity = None
    agg = c.features.aggregates
    if agg is not None:
        from features.push import VelocityUpdater

        velocity = VelocityUpdater(repo, agg.view, redis_url=redis_url,
                                   max_skew_s=c.event.max_skew_s)
    return Stages(c, worker_id, redis_url, registry, watcher, model, challenger, reader, refs,
                  core, velocity, challenger_watcher)
