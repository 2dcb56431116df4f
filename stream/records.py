"""Decision records of one batch, encoded column by column into their JSON bytes.

Building a ``Decision`` Struct per event and encoding it cost ~7 us per event at batch
4096 (``streamscore bench core``), more than all the rest of the core. Here every field
is encoded once per *batch*: a value shared by the batch (pipeline, model, worker,
stage latencies, decision time, often the source topic or a null price) is written into
a ``%``-template; a per-event field is encoded by msgspec as one JSON list and split
into per-event pieces. One bytes ``%`` per event then joins the pieces.

The bytes are exactly ``msgspec.json.encode(Decision(...))`` for the same values: the
template follows ``Decision``'s field order (a field this module does not know fails at
start-up, not on the wire), and ``tests/stream/test_pipeline.py`` decodes and re-encodes
varied batches through the Struct to keep it so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from schemas.decisions import Decision

__all__ = [
    "DECISION_FIELDS", "Column", "DecisionEncoder", "constant", "json_pieces", "string_pieces",
]

DECISION_FIELDS: tuple[str, ...] = Decision.__struct_fields__
# Fields typed plain ``str``: their per-event pieces are the JSON string without quotes
# (the quotes live in the template), which lets a whole column be split in one call.
_STR_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Decision) if f.type is str)

_encode = msgspec.json.Encoder().encode

# A field's value for the batch: one JSON text shared by every event (bytes), or one
# JSON text per event (a list of bytes; unquoted for plain ``str`` fields).
Column = bytes | list[bytes]


def json_pieces(values: list[Any]) -> list[bytes]:
    """The JSON text of each value (numbers, bools, None; NaN and inf become null)."""
    if not values:
        return []
    # One C call for the whole column; a number, true/false/null never holds a comma.
    return _encode(values)[1:-1].split(b",")


def string_pieces(values: Sequence[str]) -> list[bytes]:
    """The JSON string body of each value, without its quotes."""
    if not values:
        return []
    blob = _encode(list(values))
    if b"\\" in blob:
        # Something was escaped (a quote, a backslash, a control character): the
        # '","' separator could then occur inside a value, so encode one by one.
        return [_encode(v)[1:-1] for v in values]
    return blob[2:-2].split(b'","')


def constant(value: Any) -> bytes:
    """The JSON text of a value shared by the whole batch."""
    return _encode(value)


class DecisionEncoder:
    """Joins per-batch constants and per-event pieces into Decision JSON records."""

    def __init__(self, views: Sequence[str]) -> None:
        self.views = tuple(views)
        # Template text: a '%' in a view name must not read as a slot.
        self._view_keys = [_encode(v).replace(b"%", b"%%") for v in self.views]

    def encode(self, n: int, fields: Mapping[str, Column], ages: list[list[bytes]] | None
               ) -> list[bytes]:
        """``n`` records from every Decision field's column (``feature_age_s`` aside).

        ``ages`` holds one piece column per view (``self.views`` order), or None for an
        empty ``feature_age_s``.
        """
        parts: list[bytes] = []
        columns: list[list[bytes]] = []
        for name in DECISION_FIELDS:
            head = b'"' + name.encode() + b'":'
            if name == "feature_age_s":
                if ages is None or not self.views:
                    parts.append(head + b"{}")
                    continue
                slots = [k + b":%s" for k in self._view_keys[: len(ages)]]
                parts.append(head + b"{" + b",".join(slots) + b"}")
                columns.extend(ages[: len(slots)])
                continue
            try:
                col = fields[name]
            except KeyError:
                raise KeyError(f"decision field {name!r} has no value in the encoder's "
                               "input (stream.records follows schemas.decisions)") from None
            if isinstance(col, bytes):  # shared by the batch: into the template
                parts.append(head + col.replace(b"%", b"%%"))
            else:
                if len(col) != n:
                    raise ValueError(f"decision field {name!r}: {len(col)} values for {n}")
                parts.append(head + (b'"%s"' if name in _STR_FIELDS else b"%s"))
                columns.append(col)
        template = b"{" + b",".join(parts) + b"}"
        if not columns:
            return [template.replace(b"%%", b"%")] * n
        return [template % row for row in zip(*columns, strict=True)]
