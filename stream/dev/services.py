"""Local development infrastructure: ``streamscore dev up|down|status`` and endpoint lookup.

``dev up`` starts the embedded broker (and a Redis unless ``REDIS_URL`` names one),
records what it started in ``$STREAMSCORE_HOME/dev.json`` and leaves them
running; ``dev down`` stops exactly what that file names, nothing else.

Every command, the worker included, finds what ``dev up`` started through
``stream.endpoints``, which reads that file (never this module).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from stream.dev.embedded import (
    EmbeddedProcess,
    default_broker_kind,
    pid_alive,
    resolve_redis,
    start_broker,
    terminate_pid,
)
from stream.endpoints import home_dir, read_state, state_path

__all__ = ["dev_down", "dev_status", "dev_up"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ours(entry: dict[str, Any]) -> bool:
    # A PID file can outlive its process and the PID be reused: check the command line.
    pid = int(entry.get("pid", 0))
    return pid > 0 and pid_alive(pid) and str(entry.get("binary", "")) in _cmdline(pid)


def _entry(proc: EmbeddedProcess) -> dict[str, Any]:
    return {
        "kind": proc.kind,
        "pid": proc.pid,
        "address": proc.address,
        "data_dir": proc.data_dir,
        "log": proc.log_path,
        "binary": _cmdline(proc.pid).split(" ", 1)[0],
    }


def dev_up(broker: str | None = None) -> dict[str, Any]:
    """Start the embedded broker (and Redis if needed) in the background; return the state."""
    state = read_state()
    if state and all(_ours(e) for e in state.get("processes", [])):
        state["already_running"] = True
        return state
    if state:  # stale file from a crashed run: clean what is left, start afresh
        dev_down()
    kind = broker or default_broker_kind()
    home = home_dir()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    kafka = start_broker(kind, detach=True, log_dir=str(home / "logs"))
    processes = [_entry(kafka)]
    try:
        redis = resolve_redis(detach=True)
    except BaseException:
        kafka.stop()
        raise
    if redis.process is not None:
        processes.append(_entry(redis.process))
    state = {
        "broker": kafka.kind,
        "broker_version": kafka.version,
        "bootstrap_servers": kafka.address,
        "redis_url": redis.url,
        "redis_origin": redis.origin,
        "started_at": time.time(),
        "processes": processes,
    }
    path = state_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)
    return state


def dev_down() -> list[str]:
    """Stop what ``dev up`` started (by its PID file); return what was stopped."""
    import shutil

    state = read_state()
    if not state:
        return []
    stopped = []
    for entry in state.get("processes", []):
        if _ours(entry):
            terminate_pid(int(entry["pid"]), 10.0)
            stopped.append(f"{entry['kind']} (pid {entry['pid']}, {entry['address']})")
        if entry.get("data_dir"):
            shutil.rmtree(entry["data_dir"], ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()
    return stopped


def dev_status() -> dict[str, Any] | None:
    """The recorded state with each process marked alive or not."""
    state = read_state()
    if state:
        for entry in state.get("processes", []):
            entry["alive"] = _ours(entry)
    return state
