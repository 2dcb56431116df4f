"""The per-batch step shared by the worker and the Faust app: outputs of one batch, and
hot reload of the champion and the challenger with drift on the metrics registry."""

from __future__ import annotations

import json

import pytest

# The scoring environment (synthetic data, a Feast repo in Redis, a small registered
# model) is the worker tests' own.
from test_worker import env, write_pipeline  # noqa: F401

from stream.config import load_pipeline
from stream.core.assembly import build_stages
from stream.dev.load import make_events
from stream.drift.metrics import collector_for
from stream.metrics import WorkerMetrics
from stream.step import BatchStep

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(env):  # noqa: F811
    from scorers.registry import Registry

    reg = Registry(env.registry)
    champion = reg.resolve("fraud@champion")
    yield reg
    reg.promote("fraud", champion.version, "champion")


def _copy(registry, alias: str):
    """A new version with the champion's model text, promoted to ``alias``."""
    v1 = registry.resolve("fraud@champion")
    new = registry.register(v1.read_text(), "fraud", dict(v1.metadata))
    registry.promote("fraud", new.version, alias)
    return new


def test_step_reload_follows_champion_and_challenger_on_the_metrics_registry(
        env, unique_name, registry):  # noqa: F811
    _copy(registry, "challenger")
    path = write_pipeline(env, unique_name, model={
        "ref": "fraud@champion", "challenger": "fraud@challenger",
        "registry": str(env.registry)})
    config = load_pipeline(path)
    stages = build_stages(config)
    metrics = WorkerMetrics(config.name)
    step = BatchStep(config, stages, metrics, background_velocity=False)
    try:
        assert step.reload() is False  # no alias moved
        first_drift = step.drift
        assert first_drift is not None
        c2 = _copy(registry, "challenger")
        v2 = _copy(registry, "champion")
        assert step.reload() is True
        assert stages.core.model.version == str(v2.version)
        assert stages.core.challenger is not None
        assert stages.core.challenger.version == str(c2.version)
        # The champion's new drift monitor reports on the runner's metrics registry.
        assert step.drift is not first_drift
        assert step.drift._collector is collector_for(metrics.registry)
        assert metrics.registry.get_sample_value(
            "streamscore_model_reloads_total", {"pipeline": config.name}) == 1.0
    finally:
        step.close()
        stages.close()


def test_step_run_gives_one_decision_per_good_event_and_one_dead_letter_per_bad(
        env, unique_name):  # noqa: F811
    config = load_pipeline(write_pipeline(env, unique_name))
    stages = build_stages(config)
    step = BatchStep(config, stages, WorkerMetrics(config.name), background_velocity=True)
    try:
        events = make_events(config.schema, 64, seed=3, data_dir=env.home / "data" / "fraud")
        payloads = [json.dumps(e).encode() for e in events] + [b"{not json"]
        keys = [str(e["card_id"]).encode() for e in events] + [None]
        sources = [(config.topics.input, 0, i) for i in range(len(payloads))]
        res, outputs = step.run(payloads, keys, sources, [0.0] * len(payloads))
        step.accept(res)
    finally:
        step.close()
        stages.close()
    topics = [topic for topic, _ in outputs]
    assert topics == [config.topics.decisions, config.topics.dead_letter, config.topics.drift]
    assert len(outputs[0][1]) == 64 and len(outputs[1][1]) == 1
    assert {json.loads(v)["event_id"] for _, v in outputs[0][1]} == {e["event_id"]
                                                                     for e in events}


def test_faust_app_scores_through_the_same_step(env, unique_name):  # noqa: F811
    from stream.faust_app import create_app

    config = load_pipeline(write_pipeline(env, unique_name))
    app = create_app(config, metrics_port=-1)
    try:
        assert isinstance(app.streamscore_step, BatchStep)
        assert app.streamscore_step.stages is app.streamscore_stages
    finally:
        app.streamscore_stages.close()


def test_a_redelivered_batch_never_counts_twice_in_the_velocity_features(
        env, unique_name):  # noqa: F811
    import time

    import numpy as np

    config = load_pipeline(write_pipeline(env, unique_name))
    stages = build_stages(config)
    step = BatchStep(config, stages, WorkerMetrics(config.name), background_velocity=False)
    card = 900_000_000 + int.from_bytes(unique_name.encode()[-3:], "little")
    now = time.time()
    events = make_events(config.schema, 5, seed=4, data_dir=env.home / "data" / "fraud")
    for i, e in enumerate(events):
        e.update(card_id=card, currency="USD", amount=10.0 * (i + 1), event_time=now - 10 + i)
    payloads = [json.dumps(e).encode() for e in events]
    sources = [(config.topics.input, 2, 40 + i) for i in range(len(payloads))]
    try:
        for _ in range(2):  # the same records again: a restart from an older commit
            step.run(payloads, [None] * 5, sources, [0.0] * 5)
        got = stages.reader.read({"card_id": np.array([card]),
                                  "merchant_id": np.array([events[0]["merchant_id"]])})
    finally:
        step.close()
        stages.close()
    at = {ref.split(":", 1)[1]: j for j, ref in enumerate(stages.refs)}
    counts = [got.values[0, j] for name, j in at.items()
              if name.startswith("velocity_count")]
    sums = [got.values[0, j] for name, j in at.items() if name.startswith("velocity_sum")]
    assert counts and set(counts) == {5.0}
    assert sums and set(sums) == {150.0}
