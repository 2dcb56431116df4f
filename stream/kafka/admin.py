"""Kafka administration the engine needs: create topics if missing, read lag."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import InfrastructureError

__all__ = ["ensure_topics"]


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    settings: Mapping[str, str | int | float | bool] | None = None,
    timeout: float = 15.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names it created."""
    conf = {"bootstrap.servers": bootstrap, **(settings or {})}
    admin = AdminClient(conf)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise InfrastructureError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor)
         for n in wanted],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            # Another worker may have created it between our list and create calls.
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise InfrastructureError(f"cannot create topic {name!r}: {exc}") from None
    return created
