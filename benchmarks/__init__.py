"""Benchmarks: ``benchmarks.bench_<name>`` modules behind ``streamscore bench``.

Each reports ratios against a reference measured in the same run (LightGBM's predict,
the Feast SDK, the naive Kafka + Feast + Booster stack, a bare broker hop).
"""
