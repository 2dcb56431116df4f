"""The Kafka-free batch core: raw payloads in, encoded decisions and dead letters out.

``pipeline`` (BatchCore) runs one micro-batch; ``assembly`` builds it and its stages once;
``records``, ``reasons``, ``policy``, ``sweep``, ``specs`` and ``deadletters`` are its parts.
Nothing here imports confluent_kafka.
"""

__all__: list[str] = []
