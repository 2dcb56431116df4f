"""Apache Kafka for demos and tests: find Java and the broker's jars, format a KRaft node.

The jars come from one of two places:

- ``STREAMSCORE_KAFKA_HOME``: an unpacked Apache Kafka distribution (its ``libs/``);
- else the user cache, ``$XDG_CACHE_HOME/streamscore/kafka/<version>/libs`` (default
  ``~/.cache/...``), filled once per machine by Maven from the POM shipped beside this
  module (``kafka.pom.xml``, which pins the version). Two processes fetching at
  once take a file lock and the finished folder appears by one atomic rename, so a
  half-copied cache is never used.

``kafka_command`` writes a single-node KRaft configuration (combined broker and
controller on loopback, replication factor 1 for the internal topics, no initial
rebalance delay), formats the fresh data dir with Kafka's ``StorageTool`` and returns
the command that runs the broker; ``stream.dev.embedded`` starts and stops the process.
With ``SaslSsl`` the client listener is SASL_SSL with SCRAM-SHA-512, its users added at
format time, for tests of the secured transport (broker-internal traffic stays on a
plaintext loopback listener of its own).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import InfrastructureError

__all__ = [
    "JVM_OPTS",
    "KAFKA_VERSION",
    "SaslSsl",
    "fetch_kafka_jars",
    "java_binary",
    "kafka_available",
    "kafka_command",
    "kafka_libs",
]

_POM = Path(__file__).with_name("kafka.pom.xml")
KAFKA_VERSION = re.search(r"<kafka\.version>([^<]+)<", _POM.read_text()).group(1)  # type: ignore[union-attr]

# A broker on 2 shared cores: the serial collector keeps it small (RSS ~300 MB). C2 stays
# on: C1 only ("-XX:TieredStopAtLevel=1") starts it in 9-10 s instead of 12-14 s, but a
# backlog drain through the worker then ran at 5.9k events/s against 15.4k with C2
# (bench e2e --rates 2000, load 6-9), and benchmarks and demos measure through it.
# STREAMSCORE_KAFKA_JVM_OPTS replaces these.
JVM_OPTS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:-UsePerfData",
            "-Djava.awt.headless=true")
_FETCH_TIMEOUT_S = 900


@functools.cache
def java_binary() -> str | None:
    """A ``java`` of version 17 or later (``JAVA_HOME`` first, then PATH), else None."""
    home = os.environ.get("JAVA_HOME", "").strip()
    candidate = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        return None
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True,
                             timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return None
    major = int(found.group(1))
    if major == 1:  # "1.8.0_..." style
        major = int(found.group(2) or 0)
    return candidate if major >= 17 else None


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return Path(root) / "streamscore" / "kafka" / KAFKA_VERSION


def _distribution_libs() -> tuple[Path, str] | None:
    home = os.environ.get("STREAMSCORE_KAFKA_HOME", "").strip()
    if not home:
        return None
    libs = Path(home) / "libs"
    jars = sorted(libs.glob("kafka_2.13-*.jar")) if libs.is_dir() else []
    if not jars:
        raise InfrastructureError(
            f"STREAMSCORE_KAFKA_HOME={home} has no libs/kafka_2.13-*.jar (not an unpacked "
            "Apache Kafka distribution)"
        )
    version = re.sub(r"^kafka_2\.13-|\.jar$", "", jars[0].name)
    return libs, version


def fetch_kafka_jars() -> Path:
    """Resolve the pinned Kafka's jars with Maven into the user cache (once per machine)."""
    final = _cache_dir()
    libs = final / "libs"
    if libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfrastructureError(
            "Apache Kafka's jars are not cached and Maven (mvn) is not on PATH: install "
            "Maven, or set STREAMSCORE_KAFKA_HOME to an unpacked Kafka distribution"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{KAFKA_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same jars
        if libs.is_dir():
            return libs
        work = Path(tempfile.mkdtemp(prefix=f".{KAFKA_VERSION}-", dir=final.parent))
        try:
            shutil.copy(_POM, work / "pom.xml")
            done = subprocess.run(
                [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={work / 'libs'}"],
                capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S, cwd=work,
            )
            if done.returncode != 0 or not any((work / "libs").glob("kafka_2.13-*.jar")):
                last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
                raise InfrastructureError(
                    f"Maven could not fetch Apache Kafka {KAFKA_VERSION}: {last[0][:300]}"
                )
            (work / "pom.xml").unlink()
            os.rename(work, final)  # atomic: the cache is whole or absent
        except subprocess.TimeoutExpired:
            raise InfrastructureError(
                f"Maven did not fetch Apache Kafka {KAFKA_VERSION} in {_FETCH_TIMEOUT_S} s"
            ) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


def kafka_libs(*, fetch: bool = True) -> tuple[Path, str]:
    """``(libs dir, Kafka version)``: the distribution's, the cached, or freshly fetched."""
    dist = _distribution_libs()
    if dist is not None:
        return dist
    libs = _cache_dir() / "libs"
    if not libs.is_dir():
        if not fetch:
            raise InfrastructureError(f"Apache Kafka {KAFKA_VERSION} jars are not cached")
        libs = fetch_kafka_jars()
    return libs, KAFKA_VERSION


def kafka_available() -> bool:
    """Whether Apache Kafka can start here: Java 17+, and jars present or fetched now."""
    if java_binary() is None:
        return False
    with contextlib.suppress(InfrastructureError):
        kafka_libs(fetch=True)
        return True
    return False


def _cluster_id() -> str:
    # Kafka's cluster ids are URL-safe base64 of a random UUID, unpadded (22 characters);
    # like Kafka's own Uuid.randomUuid, never one starting with "-", which the storage
    # tool's argument parser would take for an option (1 start in 64 failed that way).
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


@dataclass(frozen=True)
class SaslSsl:
    """A SASL_SSL client listener: SCRAM-SHA-512 users and the broker's PEM key and chain.

    ``pem`` is one file holding the unencrypted PKCS#8 private key and the certificate
    chain (Kafka's PEM keystore).
    """

    users: Mapping[str, str]
    pem: str


def _server_properties(host: str, port: int, controller_port: int, data_dir: str,
                       sasl_ssl: SaslSsl | None = None, internal_port: int = 0) -> str:
    if sasl_ssl is None:
        listeners = {"PLAINTEXT": port}
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        security: dict[str, str | int] = {}
    else:
        listeners = {"SASL_SSL": port, "INTERNAL": internal_port}
        protocols = "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        security = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": sasl_ssl.pem,
        }
    advertised = ",".join(f"{name}://{host}:{p}" for name, p in listeners.items())
    settings = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"{advertised},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": list(listeners)[-1],
        "listener.security.protocol.map": protocols,
        **security,
        "log.dirs": os.path.join(data_dir, "log"),
        "num.partitions": 1,
        # One node: every internal topic has one replica and may not wait for more.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # Few internal partitions: creating 50 on first use costs seconds on a small box.
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.num.partitions": 1,
        # A test joins a group and expects its assignment now, not 3 s later.
        "group.initial.rebalance.delay.ms": 0,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _log4j_properties(log_path: str) -> str:
    return (
        "rootLogger.level=INFO\n"
        "rootLogger.appenderRef.file.ref=file\n"
        "appender.file.type=File\n"
        "appender.file.name=file\n"
        f"appender.file.fileName={log_path}\n"
        "appender.file.layout.type=PatternLayout\n"
        "appender.file.layout.pattern=[%d] %p %m (%c)%n\n"
        # The controller's and the state change logs are loud and say nothing a test needs.
        "logger.state.name=state.change.logger\nlogger.state.level=WARN\n"
    )


def kafka_command(host: str, port: int, controller_port: int, data_dir: str,
                  log_path: str, sasl_ssl: SaslSsl | None = None,
                  internal_port: int = 0) -> tuple[list[str], str]:
    """Configure and format a fresh KRaft node in ``data_dir``; return (command, version)."""
    java = java_binary()
    if java is None:
        raise InfrastructureError(
            "Apache Kafka needs Java 17 or later (set JAVA_HOME or put java on PATH); "
            "or choose --broker noida"
        )
    libs, version = kafka_libs(fetch=True)
    config = Path(data_dir) / "server.properties"
    config.write_text(_server_properties(host, port, controller_port, data_dir, sasl_ssl,
                                         internal_port))
    scram = [f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
             for name, password in (sasl_ssl.users.items() if sasl_ssl else ())]
    log4j = Path(data_dir) / "log4j2.properties"
    log4j.write_text(_log4j_properties(log_path))
    extra = os.environ.get("STREAMSCORE_KAFKA_JVM_OPTS")
    jvm = shlex.split(extra) if extra is not None else list(JVM_OPTS)
    base = [java, *jvm, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [*base, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config),
             *scram],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=300,
        )
    if done.returncode != 0:
        # The data dir (and a log kept in it) is removed on failure: quote the cause.
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
        raise InfrastructureError(
            f"formatting Kafka's storage failed (exit {done.returncode}): "
            f"{(lines or ['no output'])[-1][:300]}"
        )
    return [*base, "kafka.Kafka", str(config)], version
