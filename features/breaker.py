"""A circuit breaker that stops hammering a dead Redis and probes for its recovery.

States: *closed* (calls go through), *open* (calls are refused at once, so a dead Redis
costs the worker nothing per batch), *half-open* (after ``reset_timeout_s`` one probe call
goes through; its success closes the breaker, its failure opens it again). Used by
``features.online.OnlineReader`` and ``features.push.VelocityUpdater``.

>>> clock = iter([0.0, 0.5, 2.0]).__next__
>>> b = CircuitBreaker(failure_threshold=2, reset_timeout_s=1.0, clock=clock)
>>> b.record_failure(); b.record_failure(); b.state
'open'
>>> b.allow()          # t=0.5: still open
False
>>> b.allow(), b.state  # t=2.0: one probe goes through
(True, 'half_open')
>>> b.record_success(); b.state
'closed'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open probe."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self.opened_count = 0  # how many times the breaker tripped (for metrics)

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to Redis now (at most one probe while half-open)."""
        with self._lock:
            if self._state == "closed":
                return True
            now = self._clock()
            # A probe that never reported back (caller crashed) must not wedge the breaker,
            # so half-open also lets a new probe through after another reset period.
            if now - self._opened_at >= self.reset_timeout_s:
                self._state = "half_open"
                self._opened_at = now
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker."""
        with self._lock:
            self._state = "closed"
            self._failures = 0

    def record_failure(self) -> None:
        """A call failed (timeout, connection lost): count it, maybe open the breaker."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or self._failures >= self.failure_threshold:
                if self._state != "open":
                    self.opened_count += 1
                self._state = "open"
                self._opened_at = self._clock()
