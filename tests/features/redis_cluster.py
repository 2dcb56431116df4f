"""A real Redis Cluster for the tests: ``redis-server --cluster-enabled yes`` processes on
free loopback ports, joined by ``redis-cli --cluster create``, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["LocalCluster", "cluster_tools_missing"]


def cluster_tools_missing() -> str | None:
    """Why a cluster cannot be started here (None when it can)."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install redis-server)"
    return None


def _free_port() -> int:
    """A port free on loopback whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, under ``workdir``."""

    workdir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1000
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> LocalCluster:
        n = self.masters * (1 + self.replicas)
        self.ports = [_free_port() for _ in range(n)]
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            self._wait_ping(port)
        if self.masters == 1 and not self.replicas:  # redis-cli creates 3 masters or more
            self.client(self.ports[0]).execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            self.wait_ok()
            return self
        cmd = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
               "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-400:]!r}")
        self.wait_ok()
        self.wait_replicas()
        return self

    def wait_replicas(self, timeout: float = 30.0) -> None:
        """Until every replica's link to its master is up (its data synced)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            links = [self.client(p).info("replication") for p in self.live_ports()]
            if all(i.get("master_link_status") == "up" for i in links if i["role"] == "slave"):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster's replicas did not sync")

    def start_node(self, port: int) -> None:
        d = self.workdir / str(port)
        d.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--dir", str(d),
             "--save", "", "--appendonly", "no", "--protected-mode", "no",
             # replicas sync at once, and may take over whatever their data's age: the
             # failover tests must not depend on the machine's load
             "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0",
             "--logfile", str(d / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _wait_ping(self, port: int, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.client(port).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not start")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and all 16384 slots are served."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                infos = [self.client(p).cluster("info") for p in self.live_ports()]
                if all(i["cluster_state"] == "ok" and int(i["cluster_slots_ok"]) == 16384
                       for i in infos):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def masters_ports(self) -> list[int]:
        """Ports of the live masters, from a live node's view."""
        out = []
        for p in self.live_ports():
            role = self.client(p).execute_command("ROLE")[0]
            if role in (b"master", "master"):
                out.append(p)
        return out

    def connection_string(self) -> str:
        """Feast's connection string for this cluster (every node a startup node)."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
