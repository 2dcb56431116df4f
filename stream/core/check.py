"""Check a pipeline before it runs: its own values, event, Feast repo, model and policy.

``check_pipeline`` returns one line per problem (empty: the pipeline can run). It reads
the files only: the Feast registry (feature views, their features, push sources), the
model registry (feature names and order, the categorical vocabularies the model was
trained with) and the event schema; it connects to neither Kafka nor Redis. Each stage
is checked on its own, so one broken part does not hide the others' problems.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.errors import StreamscoreError
from stream.config import BandsPolicy, PipelineConfig, SweepPolicy, load_pipeline
from stream.core.policy import policy_fields
from stream.core.specs import event_spec

__all__ = ["check_pipeline"]


def check_pipeline(path: str | Path, *, registry_root: str | None = None) -> list[str]:
    """Every problem of the pipeline file at ``path``, one line each."""
    try:
        config = load_pipeline(path)
    except StreamscoreError as exc:
        return [str(exc)]
    problems = _values(config)
    known: set[str] = set()
    fields: tuple[str, ...] = ()

    def stage(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # any failure of a stage is a line, not a traceback
            problems.append(f"{what}: {exc}")
            return None

    spec = stage("event", lambda: event_spec(config.schema, config.event.key,
                                             config.event.time_field, config.event.id_field))
    if spec is not None:
        fields = spec.fields
        known |= set(fields)
    repo = config.resolve_path(config.features.repo)
    views = stage("features.repo", lambda: _views(repo))
    online: list[str] = []
    if views is not None:
        online = _refs(config, repo, views, problems)
        known |= set(online)
    request = None
    if config.features.request:
        request = stage("features.request", lambda: _request(config.features.request, repo))
        if request is not None:
            known |= set(request.outputs)
            missing = [n for n in request.inputs if n not in known]
            if missing and spec is not None:
                problems.append(f"features.request {config.features.request!r} needs "
                                f"{', '.join(missing)}: no event field or online feature")
    if views is not None and config.features.aggregates is not None:
        _aggregates(config, views, set(fields), known, problems)
    if spec is not None:
        for where, name in policy_fields(config.policy):
            if name not in known:
                problems.append(f"policy.{where}: {name!r} is no event field, request-time "
                                "or online feature of this pipeline")
        stage("model", lambda: _model(config, registry_root, known, repo, problems))
    return problems


def _values(c: PipelineConfig) -> list[str]:
    """The file's own numbers and names."""
    out = []
    if not c.budget_ms > 0:
        out.append(f"budget_ms: must be > 0 (is {c.budget_ms:g})")
    t = c.topics
    names = [t.input, t.decisions, t.dead_letter, t.drift]
    if len(set(names)) < len(names):
        out.append(f"topics: input, decisions, dead_letter and drift must differ ({names})")
    if t.partitions < 1:
        out.append(f"topics.partitions: must be >= 1 (is {t.partitions})")
    if c.batch.max_messages < 1:
        out.append(f"batch.max_messages: must be >= 1 (is {c.batch.max_messages})")
    if not 0 <= c.dead_letter.max_bad_ratio <= 1:
        out.append("dead_letter.max_bad_ratio: must be within [0, 1]")
    p = c.policy
    if isinstance(p, BandsPolicy):
        if not 0 <= p.review_above <= p.decline_above <= 1:
            out.append(f"policy: need 0 <= review_above ({p.review_above:g}) <= "
                       f"decline_above ({p.decline_above:g}) <= 1")
        names = [r.name for r in p.rules]
        if len(set(names)) < len(names) or (p.fallback and p.fallback.name in names):
            out.append("policy: rule names must differ")
    elif isinstance(p, SweepPolicy):
        if not p.candidates or min(p.candidates) <= 0:
            out.append("policy.candidates: need at least one multiplier, each > 0")
        if not p.floor_ratio <= 1 <= p.ceiling_ratio:
            out.append(f"policy: need floor_ratio ({p.floor_ratio:g}) <= 1 <= "
                       f"ceiling_ratio ({p.ceiling_ratio:g})")
        if p.max_step_ratio < 0:
            out.append("policy.max_step_ratio: must be >= 0")
    return out


def _views(repo: Path) -> dict[str, Any]:
    from features.repo import feature_views

    return {v.name: v for v in feature_views(repo)}


def _refs(config: PipelineConfig, repo: Path, views: dict[str, Any],
          problems: list[str]) -> list[str]:
    """Bare names of the pipeline's online features; a ref the registry lacks is a line."""
    from features.repo import feature_refs

    refs = list(config.features.refs) or feature_refs(repo)
    names = []
    for ref in refs:
        view, _, feature = ref.partition(":")
        fv = views.get(view)
        if fv is None:
            problems.append(f"features.refs: {ref!r}: the repo has no view {view!r}")
        elif feature not in {f.name for f in fv.features}:
            problems.append(f"features.refs: {ref!r}: view {view} has no feature {feature!r}")
        else:
            names.append(feature)
    return names


def _request(name: str, repo: Path) -> Any:
    from features.repo import load_vocab
    from features.request import RequestFeatures

    return RequestFeatures(name, load_vocab(repo))


def _aggregates(config: PipelineConfig, views: dict[str, Any], fields: set[str],
                known: set[str], problems: list[str]) -> None:
    agg = config.features.aggregates
    assert agg is not None
    fv = views.get(agg.view)
    if fv is None:
        problems.append(f"features.aggregates.view: the repo has no view {agg.view!r}")
    elif type(getattr(fv, "stream_source", None)).__name__ != "PushSource":
        problems.append(f"features.aggregates.view: {agg.view} has no push source")
    if fields and agg.key_field not in fields:
        problems.append(f"features.aggregates.key_field: {agg.key_field!r} is no event field")
    if agg.amount_field not in known:
        problems.append(f"features.aggregates.amount_field: {agg.amount_field!r} is no "
                        "event field or request-time feature")


def _model(config: PipelineConfig, registry_root: str | None, known: set[str], repo: Path,
           problems: list[str]) -> None:
    """The model's features are all provided, and coded as it was trained."""
    from features.repo import load_vocab
    from scorers.registry import Registry, default_root
    from scorers.textmodel import parse_model

    c = config
    root = registry_root or (str(c.resolve_path(c.model.registry)) if c.model.registry
                             else str(default_root()))
    registry = Registry(root)
    for ref in filter(None, (c.model.ref, c.model.challenger)):
        mv = registry.resolve(ref)
        names = parse_model(mv.read_text()).feature_names
        missing = [n for n in names if n not in known]
        if missing:
            problems.append(f"model {ref}: needs features this pipeline cannot provide: "
                            f"{', '.join(missing)}")
        trained = mv.metadata.get("vocab") or {}
        serving = load_vocab(repo) if trained else {}
        for name, levels in trained.items():
            if name in names and serving.get(name) != levels:
                problems.append(f"model {ref}: categorical {name!r} was trained with other "
                                f"levels than the repo's vocab.json codes")
