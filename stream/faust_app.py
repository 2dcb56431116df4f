"""A Faust app running streamscore's stages, for teams already on faust-streaming.

The agent consumes the pipeline's input topic in micro-batches (``take_events``), runs
the same per-batch step as the confluent-kafka worker (``stream.step``: decode/validate ->
enrich -> score -> decide -> drift windows -> velocity update, with the same hot reload of
the champion and the challenger) and publishes the same decision, dead-letter and drift
records to the same topics.

Delivery: the agent awaits the broker's ack of every record a batch produced before it
acknowledges the batch's events to Faust (by hand: ``noack_take`` never acknowledges
by itself, where ``take_events`` would acknowledge a batch even when its processing or
publishing raised), so Faust commits an input offset only after its outputs are
durable. When a batch fails, its events stay unacknowledged and the process exits 1
at once with one line (not an agent restart that would read on past the gap, nor
Faust's shutdown, which would commit what its background reader acknowledged): the
restart re-reads them. A crash replays, never loses (at-least-once, like the main
worker).

Run it with ``streamscore faust --pipeline pipelines/fraud.yaml`` (or build the app with
``create_app`` and hand it to ``faust.Worker``). Faust's own web server binds
0.0.0.0:6066 even when disabled, so it is pinned to loopback on a free port here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from schemas.errors import ConfigError
from stream.config import PipelineConfig
from stream.core.assembly import Stages, build_stages
from stream.endpoints import free_port

__all__ = ["create_app", "faust_credentials"]

log = logging.getLogger(__name__)


def _stop_now(why: str) -> None:
    """One line on stderr, then exit 1 at once (no Faust shutdown, which would commit)."""
    log.critical("streamscore faust: %s", why)
    sys.stderr.write(f"streamscore: error: {why}\n")
    sys.stderr.flush()
    os._exit(1)


def faust_credentials(settings: dict[str, Any]) -> Any:
    """Translate librdkafka security settings of the pipeline file into Faust credentials.

    Faust talks to Kafka through aiokafka, not librdkafka: only the security settings
    have an equivalent (PLAIN/SCRAM over SASL_PLAINTEXT or SASL_SSL, and SSL).
    """
    import ssl

    import faust

    protocol = str(settings.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.get("ssl.ca.location") or None)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = str(settings.get("sasl.mechanisms", settings.get("sasl.mechanism", "PLAIN")))
    username, password = settings.get("sasl.username"), settings.get("sasl.password")
    if not username or not password:
        raise ConfigError(f"security.protocol {protocol} needs sasl.username and sasl.password")
    if mechanism.upper() not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigError(f"sasl.mechanisms {mechanism} is not supported by the Faust app")
    return faust.SASLCredentials(username=str(username), password=str(password),
                                 ssl_context=context, mechanism=mechanism.upper())


def create_app(
    config: PipelineConfig,
    *,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    registry_root: str | None = None,
    metrics_port: int | None = None,
    stages: Stages | None = None,
) -> Any:
    """A ``faust.App`` whose agent scores ``config``'s input topic with streamscore's stages."""
    import faust
    from mode import CrashingSupervisor

    from stream.endpoints import resolve_bootstrap
    from stream.metrics import HealthServer, WorkerMetrics
    from stream.step import BatchStep

    c = config
    bootstrap = bootstrap or resolve_bootstrap(c.kafka.bootstrap_servers)
    st = stages or build_stages(c, redis_url=redis_url, registry_root=registry_root)
    settings = {**c.kafka.settings, **c.kafka.consumer}
    session_ms = int(settings.get("session.timeout.ms", 10_000))
    app = faust.App(
        c.kafka.group_id or f"streamscore-{c.name}",
        broker=[f"kafka://{server.strip()}" for server in bootstrap.split(",")],
        broker_credentials=faust_credentials(c.kafka.settings),
        broker_session_timeout=session_ms / 1000.0,  # Tansu: <= 10 s or joins take ages
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        web_bind="127.0.0.1",
        web_port=free_port(),
        topic_partitions=c.topics.partitions,
    )
    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    source = raw_topic(c.topics.input)
    outputs = {name: raw_topic(name) for name in
               (c.topics.decisions, c.topics.dead_letter, c.topics.drift)}

    metrics = WorkerMetrics(c.name)
    # The worker's per-batch step; the velocity update runs inline (the agent is a
    # coroutine: a thread would only add a hand-off).
    step = BatchStep(c, st, metrics, background_velocity=False)
    port = c.metrics.port if metrics_port is None else metrics_port
    http = HealthServer(metrics, c.metrics.host, port).start() if port >= 0 else None

    async def publish(batches: Sequence[tuple[str, Sequence[tuple[bytes | None, bytes]]]]) -> None:
        # force=True: send now rather than when Faust acks the current event; then wait
        # for every ack before the batch's events count as processed.
        futures = []
        for topic, records in batches:
            channel = outputs[topic]
            for key, value in records:
                futures.append(await channel.send(key=key, value=value, force=True))
        if futures:
            await asyncio.gather(*futures)

    # A batch that fails stops the process at once (exit code 1, one line): its events
    # are left unacknowledged, so never committed, and re-read by the next start. Not
    # Faust's own shutdown: once the batch iterator is gone, Faust's background reader
    # acknowledges (and its shutdown commits) events nobody scored. Anything else that
    # crashes the agent stops the app too instead of restarting the agent past a gap.
    @app.agent(source, name=f"streamscore-{c.name}-score",
               supervisor_strategy=CrashingSupervisor)
    async def score(stream: Any) -> None:
        async for events in stream.noack_take(c.batch.max_messages,
                                              within=c.batch.timeout_ms / 1000.0):
            t0 = time.perf_counter()
            metrics.beat()
            msgs = [e.message for e in events]
            try:
                res, outputs = step.run(
                    [m.value for m in msgs],
                    [m.key for m in msgs],
                    [(m.topic, m.partition, m.offset) for m in msgs],
                    [float(m.timestamp or 0.0) for m in msgs],
                )
                await publish(outputs)
            except Exception as exc:
                _stop_now(f"a batch of {len(msgs)} events failed, stopping without "
                          f"committing it (re-read after the restart): {exc!r}")
            # Every output is acknowledged: only now may Faust commit these inputs.
            for event in events:
                await stream.ack(event)
            metrics.observe_batch(res, time.perf_counter() - t0)
            try:
                step.accept(res)  # a flood is an incident: stop
            except Exception as exc:
                _stop_now(str(exc))

    @app.timer(interval=max(0.5, c.model.reload_check_s))
    async def reload_model() -> None:
        step.reload()  # champion and challenger, between batches (the agent awaits here)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: Any, assigned: Any, **_: Any) -> None:
        metrics.subscribed = True
        metrics.assigned.labels(c.name).set(len(assigned))

    @app.service
    class _Closer(faust.Service):  # type: ignore[misc]
        """Flushes the last drift window and closes the online store on shutdown."""

        async def on_stop(self) -> None:
            out = step.flush()
            if out:
                try:
                    await publish(out)
                except Exception:
                    log.exception("publishing the last drift window failed")
            step.close()
            st.close()
            if http is not None:
                http.stop()

    setattr(app, "streamscore_stages", st)  # noqa: B010 - for tests and introspection
    setattr(app, "streamscore_step", step)  # noqa: B010
    return app
