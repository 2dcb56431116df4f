"""Kafka I/O: clients, topic administration, the in-flight window and idle-fetch handling.

The only part of ``stream`` that imports confluent_kafka on the scoring path.
"""

__all__: list[str] = []
