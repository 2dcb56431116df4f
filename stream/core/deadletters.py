"""Bad input: its dead-letter record, and the guard that stops a worker on a flood of it.

Every payload that does not decode to a valid event yields exactly one record on the
dead-letter topic (``schemas.deadletter.DeadLetter``: the raw payload, why, where it came
from). A little bad input is noise; most of a window of it is an incident (a producer
on a new schema, a wrong topic), and ``DlqGuard`` stops the worker instead of
dead-lettering a whole stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from schemas.deadletter import DEADLETTER_ERROR_CAP, DEADLETTER_PAYLOAD_CAP, DeadLetter
from schemas.errors import StreamscoreError

__all__ = ["DeadLetterFlood", "DlqGuard", "dead_letter_record"]

_encode = msgspec.json.Encoder().encode


class DeadLetterFlood(StreamscoreError):
    """Too much of the recent input was bad: an incident, not noise; the worker stops."""


class DlqGuard:
    """Stops the worker when more than ``max_ratio`` of the last window of input was bad.

    Counts are kept per consecutive window of at least ``window`` events; the check
    fires once a window is full, so a few bad messages at start-up are not an incident.
    """

    def __init__(self, max_ratio: float, window: int) -> None:
        self.max_ratio = max_ratio
        self.window = max(1, window)
        self.total = 0
        self.bad = 0

    def add(self, total: int, bad: int) -> None:
        """Count a batch; raise ``DeadLetterFlood`` when a full window is over the cap."""
        self.total += total
        self.bad += bad
        if self.total < self.window:
            return
        ratio = self.bad / self.total
        self.total = self.bad = 0
        if ratio > self.max_ratio:
            raise DeadLetterFlood(
                f"{ratio:.0%} of the last window of input was bad (cap "
                f"{self.max_ratio:.0%}); stopping: check the producers and the dead-letter topic"
            )


def dead_letter_record(
    rej: Any, payloads: Sequence[bytes | None], keys: Sequence[bytes | None] | None,
    sources: Sequence[tuple[str, int, int]] | None, *, pipeline: str, worker_id: str,
    failed_at: float, payload_cap: int = DEADLETTER_PAYLOAD_CAP,
) -> tuple[bytes | None, bytes]:
    """(key, encoded DeadLetter) of one rejection (``schemas.registry.Rejection``).

    The record fits the dead-letter topic whatever the input's size: the payload is kept
    up to ``payload_cap`` bytes (and the key likewise), with the whole payload's size
    and sha256 (see ``schemas.deadletter``).
    """
    raw = payloads[rej.index] or b""
    key = keys[rej.index] if keys is not None else None
    src = sources[rej.index] if sources is not None else ("", -1, -1)
    truncated = len(raw) > payload_cap
    record = DeadLetter(
        pipeline=pipeline, error_code=rej.code, error=rej.message[:DEADLETTER_ERROR_CAP],
        payload=raw[:payload_cap] if truncated else raw, payload_size=len(raw),
        topic=src[0], partition=src[1], offset=src[2],
        key=key[:payload_cap] if key is not None else None,
        failed_at=failed_at, worker_id=worker_id,
        payload_sha256=hashlib.sha256(raw).hexdigest(), payload_truncated=truncated,
    )
    return key, _encode(record)
