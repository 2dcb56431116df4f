"""The scoring worker and everything around it, one subpackage per job.

``stream.worker`` (and ``stream.faust_app``) run ``stream.step`` per micro-batch over the
Kafka-free batch core (``stream.core``), publish and commit through ``stream.kafka`` (one
commit owner), monitor drift (``stream.drift``); ``stream.cli`` is the command line and
``stream.dev`` the development infrastructure, which the scoring path never imports.
Only this package (and benchmarks/tests) talks to Kafka.
"""
