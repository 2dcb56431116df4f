"""The scoring worker and everything around it: Kafka I/O, policies, drift, metrics, CLI.

Only this package (and benchmarks/tests) talks to Kafka. See ``stream.worker`` for the
loop, ``stream.core.pipeline`` for the Kafka-free batch core, ``stream.cli`` for commands.
"""
