"""The Faust app runs the same stages as the worker and publishes the same records."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys

import pytest

# The scoring environment (synthetic data, a Feast repo in Redis, a small registered
# model) and the topic helpers are the worker tests' own.
from test_worker import env, expected_ids, produce, read_topic, write_pipeline  # noqa: F401

pytestmark = pytest.mark.integration


def _spawn_faust(path, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "faust", "--pipeline", str(path),
         "--metrics-port", "-1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_faust_app_scores_every_event_once_and_stops_on_sigterm(env, unique_name):  # noqa: F811
    path = write_pipeline(env, unique_name, kafka={"group_id": f"{unique_name}-faust"})
    n, ratio, seed = 600, 0.05, 11
    produce(path, n, bad_ratio=ratio, seed=seed)
    good, bad = expected_ids(n, seed, ratio)

    log = open(env.home / f"{unique_name}-faust.log", "w")  # noqa: SIM115
    proc = _spawn_faust(path, log)
    try:
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=len(good), timeout=120)
        dead = read_topic(env.bootstrap, f"{unique_name}.dlq", want=bad, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
        log.close()
    output = (env.home / f"{unique_name}-faust.log").read_text()
    counts = collections.Counter(d["event_id"] for d in decisions)
    assert set(counts) == good, output[-3000:]
    assert max(counts.values()) == 1  # no restart in this run: no duplicates either
    assert len(dead) == bad
    # Dead letters point back at distinct input offsets; decisions carry the audit facts.
    assert len({(d["partition"], d["offset"]) for d in dead}) == bad
    assert all(d["offset"] >= 0 and d["error_code"] for d in dead)
    for d in decisions:
        assert d["pipeline"] == "fraud" and d["outcome"] in ("approve", "review", "decline")
        assert d["model_version"] and d["source_offset"] >= 0
    assert rc == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_faust_credentials_from_librdkafka_settings():
    import faust

    from schemas.errors import ConfigError
    from stream.faust_app import faust_credentials

    assert faust_credentials({}) is None
    creds = faust_credentials({"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                               "sasl.username": "u", "sasl.password": "s3cr3t-pw"})
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.ssl_context is not None
    assert "s3cr3t" not in repr(creds)  # the password never shows up in logs
    with pytest.raises(ConfigError, match=r"sasl\.password"):
        faust_credentials({"security.protocol": "SASL_PLAINTEXT", "sasl.username": "u"})
    with pytest.raises(ConfigError, match="GSSAPI"):
        faust_credentials({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI",
                           "sasl.username": "u", "sasl.password": "p"})


def test_faust_app_never_commits_a_batch_whose_outputs_failed(env, unique_name):  # noqa: F811
    # The decisions topic refuses every record (max.message.bytes): publishing raises.
    # The batch's events must stay uncommitted (re-read after the restart) and the app
    # must stop, not restart its agent and read on.
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    for f in admin.create_topics([NewTopic(f"{unique_name}.dec", 4, 1,
                                           config={"max.message.bytes": "200"})]).values():
        f.result(30)
    group = f"{unique_name}-faust"
    path = write_pipeline(env, unique_name, kafka={"group_id": group})
    produce(path, 300, seed=12)
    log = open(env.home / f"{unique_name}-faust.log", "w")  # noqa: SIM115
    proc = _spawn_faust(path, log)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    finally:
        log.close()
    output = (env.home / f"{unique_name}-faust.log").read_text()
    c = Consumer({"bootstrap.servers": env.bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(f"{unique_name}.in", p) for p in range(4)],
                                timeout=15)
    finally:
        c.close()
    offsets = [(tp.partition, tp.offset) for tp in committed]
    assert all(offset < 0 for _, offset in offsets), (offsets, output[-3000:])
    assert rc not in (None, 0), output[-3000:]  # stopped, and said it failed
