"""Where the infrastructure is: Kafka bootstrap servers, the Redis URL, a free local port.

Every command finds its infrastructure the same way: the pipeline file first, then the
environment, then what ``streamscore dev up`` recorded in ``$STREAMSCORE_HOME/dev.json``.
This is the only part of the development tooling that the scoring path (worker, Faust
app, stage assembly) reads: the state file's location and contents, never the code that
starts brokers (``stream.dev``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from schemas.errors import InfrastructureError

__all__ = [
    "free_port",
    "home_dir",
    "read_state",
    "redis_answers",
    "resolve_bootstrap",
    "resolve_redis_url",
    "state_path",
]


def home_dir() -> Path:
    """``$STREAMSCORE_HOME``, default ``./.streamscore``: data, registries, dev state."""
    return Path(os.environ.get("STREAMSCORE_HOME", ".streamscore")).resolve()


def state_path() -> Path:
    """The file where ``dev up`` records what it started."""
    return home_dir() / "dev.json"


def read_state() -> dict[str, Any] | None:
    """What ``dev up`` recorded, or None when nothing is up."""
    path = state_path()
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise InfrastructureError(f"{path} is unreadable; remove it and run dev up again") from None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 0.3) -> bool:
    """Whether a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _configured(configured: str, env_var: str, state_key: str) -> str:
    """The first non-empty of: the pipeline's value, the environment, ``dev up``'s state."""
    if configured.strip():
        return configured.strip()
    env = os.environ.get(env_var, "").strip()
    if env:
        return env
    state = read_state()
    return str(state.get(state_key) or "") if state else ""


def resolve_bootstrap(configured: str = "") -> str:
    """Kafka bootstrap servers: the pipeline's, else the environment's, else ``dev up``'s."""
    found = _configured(configured, "KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers")
    if found:
        return found
    raise InfrastructureError(
        "no Kafka configured: set kafka.bootstrap_servers in the pipeline file or "
        "KAFKA_BOOTSTRAP_SERVERS, or run 'streamscore dev up'"
    )


def resolve_redis_url(configured: str = "") -> str:
    """Redis URL: the pipeline's, else REDIS_URL, else ``dev up``'s (never a guess at 6379)."""
    found = _configured(configured, "REDIS_URL", "redis_url")
    if found:
        return found
    raise InfrastructureError(
        "no Redis configured: set features.redis_url or REDIS_URL, or run 'streamscore dev up'"
    )
