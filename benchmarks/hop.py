"""The broker's own latency: a plain producer -> broker -> consumer hop, no worker.

Embedded brokers are emulators with latency of their own, so every benchmark run also
measures, on the same broker and at the same rates, how long one hop takes: the load
generator sends the same events to a topic and the harness's collector reads that
topic directly. The end-to-end path has two such hops (events in, decisions out); what
it takes beyond them is the worker's.

``HopStack`` is the stack interface of ``benchmarks.stacks`` with nothing to run.
"""

from __future__ import annotations

__all__ = ["HopStack"]


class HopStack:
    """A 'stack' whose output is its input topic: the collector reads what was sent."""

    name = "hop"
    mode = "raw"  # the collector reads load-generator payloads, not decisions
    pausable = False

    def __init__(self, topic: str) -> None:
        self.input_topic = topic
        self.output_topics = [topic]
        self.dead_letter_topics: tuple[str, ...] = ()

    def start(self) -> None:
        """Nothing to start: the broker is the system under test."""

    def stop(self) -> None:
        """Nothing to stop."""

    def pause(self) -> None:
        """Not applicable: a hop has no consumer process to pause."""

    def resume(self) -> None:
        """Not applicable."""

    def alive(self) -> bool:
        """Always: there is no process that could die."""
        return True

    def log_tail(self, lines: int = 20) -> str:
        """No logs: nothing runs."""
        return ""
