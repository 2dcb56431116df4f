"""Bad input: its dead-letter record, the events refused after decoding, and the guard
that stops a worker on a flood of it.

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
import numpy as np

from schemas.deadletter import DEADLETTER_ERROR_CAP, DEADLETTER_PAYLOAD_CAP, DeadLetter
from schemas.errors import StreamscoreError
from schemas.registry import Rejection

__all__ = ["DeadLetterFlood", "DlqGuard", "dead_letter_record", "refuse"]

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


def refuse(
    cols: dict[str, Any], idx: list[int], rejected: list[Rejection], *, time_field: str,
    now: float, max_skew_s: float, request: Any,
) -> tuple[dict[str, Any], list[int]]:
    """Drop decoded events that must not be scored; each becomes one ``Rejection``.

    An event dated beyond ``now + max_skew_s`` (``event_time_skew``), and
    one the request-time features cannot be computed for (``request.invalid``, e.g.
    ``unknown_currency``). One record per event: the first fault found names it. The
    common batch has neither: two vectorized checks, no copy.
    """
    times = cols[time_field]
    skewed = times > now + max_skew_s
    bad: dict[int, tuple[str, str]] = {}
    if skewed.any():
        for j in np.flatnonzero(skewed).tolist():
            bad[j] = ("event_time_skew", f"{time_field} {times[j]!r} is more than "
                      f"{max_skew_s:g} s after the worker's clock ({now!r})")
    for code, rows, messages in (request.invalid(cols) if request is not None else []):
        for j, message in zip(rows.tolist(), messages, strict=True):
            bad.setdefault(j, (code, message))
    if not bad:
        return cols, idx
    for j, (code, message) in bad.items():
        rejected.append(Rejection(idx[j], code, message))
    keep = np.ones(len(idx), dtype=bool)
    keep[list(bad)] = False
    return ({k: v[keep] for k, v in cols.items()},
            [i for i, k in zip(idx, keep.tolist(), strict=True) if k])
