"""The scoring stacks under test, as subprocesses: the streamscore worker and the naive one.

A stack is a set of processes consuming one input topic in one consumer group and
writing decisions and dead letters. The harness starts it once per sweep, pauses it
(SIGSTOP) to build a backlog for the drain measurement, resumes it (SIGCONT) and stops
it (SIGTERM, then SIGKILL) at the end. Each process logs to its own file, whose tail is
shown when a stack fails to start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SubprocessStack", "naive_stack", "summarize_profile", "worker_stack"]

_BUCKET = re.compile(r'^(\w+)_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+(\S+)$', re.M)


class SubprocessStack:
    """N copies of one command, one consumer group, logs in ``log_dir``."""

    mode = "decisions"
    pausable = True

    def __init__(
        self, name: str, cmd: Sequence[str], *, input_topic: str, decisions_topic: str,
        dead_letter_topic: str, log_dir: Path, copies: int = 1,
        env: dict[str, str] | None = None, metrics_ports: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        # Copy i gets "--metrics-port <metrics_ports[i]>" appended when ports are given.
        self.metrics_ports = list(metrics_ports)
        self.input_topic = input_topic
        self.output_topics = [decisions_topic, dead_letter_topic]
        self.dead_letter_topics = (dead_letter_topic,)
        self.copies = copies
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.profilers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> None:
        """Start every copy (logs to ``<log_dir>/<name>-<i>.log``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.copies):
            log = self.log_dir / f"{self.name}-{i}.log"
            self.logs.append(log)
            cmd = list(self.cmd)
            if self.metrics_ports:
                cmd += ["--metrics-port", str(self.metrics_ports[i])]
            with open(log, "wb") as fh:
                self.procs.append(subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                    env=self.env, cwd=str(Path(__file__).resolve().parent.parent),
                ))

    def alive(self) -> bool:
        """Whether every copy still runs."""
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def pause(self) -> None:
        """SIGSTOP every copy (the backlog builds up in the broker)."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every copy."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (after SIGCONT, in case it is paused), wait, then SIGKILL."""
        self.resume()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def start_profile(self, out_dir: Path, rate_hz: int = 100) -> bool:
        """Sample every copy with py-spy (collapsed stacks); False if py-spy is absent."""
        spy = Path(sys.executable).with_name("py-spy")
        binary = str(spy) if spy.exists() else shutil.which("py-spy")
        if not binary:
            return False
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, proc in enumerate(self.procs):
            path = out_dir / f"profile-{self.name}-{i}.txt"
            cmd = [binary, "record", "-p", str(proc.pid), "-r", str(rate_hz), "-f", "raw",
                   "-o", str(path), "--nonblocking"]
            self.profilers.append((subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL), path))
        return True

    def stop_profile(self, top: int = 15) -> dict[str, Any]:
        """Stop py-spy (it writes on SIGINT) and summarize where the samples fell."""
        paths = []
        for spy, path in self.profilers:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=20)
            paths.append(path)
        self.profilers = []
        return summarize_profile(paths, top) if paths else {}

    def histogram(self, metric: str) -> dict[float, float]:
        """Cumulative bucket counts (le -> count) of a Prometheus histogram, all copies."""
        import urllib.request

        total: dict[float, float] = {}
        for port in self.metrics_ports:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=2
                ) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            for match in _BUCKET.finditer(text):
                if match.group(1) != metric:
                    continue
                le = float("inf") if match.group(2) == "+Inf" else float(match.group(2))
                total[le] = total.get(le, 0.0) + float(match.group(3))
        return total

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of every copy's log."""
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


def summarize_profile(paths: Sequence[Path], top: int = 15) -> dict[str, Any]:
    """Top functions by self samples and by inclusive samples in collapsed-stack files."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                n = int(count)
                total += n
                frames = [f.strip() for f in stack.split(";") if f.strip()]
                if not frames:
                    continue
                own[frames[-1]] = own.get(frames[-1], 0) + n
                for frame in set(frames):
                    incl[frame] = incl.get(frame, 0) + n

    def ranked(table: dict[str, int]) -> list[dict[str, Any]]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [{"function": k, "share": round(v / total, 4)} for k, v in best]

    return {"samples": total, "files": [p.name for p in paths], "self": ranked(own),
            "inclusive": ranked(incl)}


def _streamscore_cmd() -> list[str]:
    # The console script next to this interpreter, else the module entry point.
    script = Path(sys.executable).with_name("streamscore")
    if script.exists():
        return [str(script)]
    found = shutil.which("streamscore")
    return [found] if found else [sys.executable, "-m", "stream.cli"]


def worker_stack(
    pipeline_file: Path, topics: dict[str, str], log_dir: Path, *, copies: int = 1,
    env: dict[str, str] | None = None, batch: int | None = None,
) -> SubprocessStack:
    """``streamscore run --pipeline FILE [--batch N]``, ``copies`` times in one consumer
    group.

    Each copy serves /metrics on its own free port, scraped for the worker's own
    batch latency (consumed -> every output acknowledged and committed). ``batch`` caps
    its micro-batches (default: the pipeline file's ``batch.max_messages``).
    """
    from stream.dev.embedded import free_port

    cmd = [*_streamscore_cmd(), "run", "--pipeline", str(pipeline_file)]
    if batch is not None:
        cmd += ["--batch", str(int(batch))]
    return SubprocessStack(
        "worker", cmd,
        input_topic=topics["input"], decisions_topic=topics["decisions"],
        dead_letter_topic=topics["dead_letter"], log_dir=log_dir, copies=copies, env=env,
        metrics_ports=[free_port() for _ in range(copies)],
    )


def naive_stack(
    *, bootstrap: str, topics: dict[str, str], group: str, pipeline: str, repo: Path,
    model: Path, redis_url: str, log_dir: Path, copies: int = 1,
) -> SubprocessStack:
    """``python -m benchmarks.naive`` with the same broker, Redis, model and topics."""
    cmd = [
        sys.executable, "-m", "benchmarks.naive", "--bootstrap", bootstrap,
        "--input", topics["input"], "--decisions", topics["decisions"],
        "--dead-letter", topics["dead_letter"], "--group", group, "--pipeline", pipeline,
        "--repo", str(repo), "--model", str(model), "--redis-url", redis_url,
    ]
    return SubprocessStack(
        "naive", cmd, input_topic=topics["input"], decisions_topic=topics["decisions"],
        dead_letter_topic=topics["dead_letter"], log_dir=log_dir, copies=copies,
    )
