"""Decision records of one batch, encoded column by column into their JSON bytes.

Building a ``Decision`` Struct per event and encoding it cost ~7 us per event at batch
4096 (``streamscore bench core``), more than all the rest of the core. Here every field
is encoded once per *batch*: a value shared by the batch (pipeline, model, worker,
stage latencies, decision time, often the source topic or a null price) is part of
the constant text between per-event pieces; a per-event field is encoded by msgspec as
one JSON list and split into per-event pieces. One ``b"".join`` per event (C-level,
through ``map``) then joins texts and pieces.

The bytes are exactly ``msgspec.json.encode(Decision(...))`` for the same values: the
template follows ``Decision``'s field order (a field this module does not know fails at
start-up, not on the wire), and ``tests/stream/core/test_pipeline.py`` decodes and re-encodes
varied batches through the Struct to keep it so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.decisions import DEGRADED_REASONS, Decision, Reason
from stream.core.policy import OUTCOMES, PRICE_RULES

__all__ = [
    "DECISION_FIELDS",
    "Column",
    "DecisionEncoder",
    "age_columns",
    "band_columns",
    "constant",
    "count_column",
    "degraded_columns",
    "flag_column",
    "json_pieces",
    "price_columns",
    "reason_column",
    "rule_table",
    "source_columns",
    "string_pieces",
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


# The JSON of each per-event field with few values, indexed by its code (object arrays,
# so a whole batch's column is one fancy index and one tolist()).
_DEGRADED_JSON = np.array(
    [_encode([r for i, r in enumerate(DEGRADED_REASONS) if mask >> i & 1])
     for mask in range(1 << len(DEGRADED_REASONS))], dtype=object)  # by degraded bit mask
_OUTCOME_JSON = np.array([_encode(o) for o in OUTCOMES], dtype=object)


def rule_table(names: Sequence[str]) -> npt.NDArray[np.object_]:
    """The JSON of each rule name, indexed by rule code (code 0, no rule: null)."""
    return np.array([_encode(r or None) for r in names], dtype=object)


_PRICE_RULE_JSON = rule_table(PRICE_RULES)


def _coded(table: npt.NDArray[np.object_], codes: npt.NDArray[np.int8]) -> Column:
    """Each code's JSON; one shared text when the batch holds a single code (common: an
    all-approve batch, no rule), which also saves the records a per-event slot."""
    first = int(codes[0]) if codes.size else 0
    if codes.size and not (codes != first).any():
        return bytes(table[first])
    return table[codes].tolist()  # type: ignore[no-any-return]


def band_columns(outcome: npt.NDArray[np.int8], rule: npt.NDArray[np.int8],
                 rules: npt.NDArray[np.object_]) -> dict[str, Column]:
    """outcome / rule / price of banded decisions (codes into OUTCOMES / ``rules``, a
    ``rule_table``)."""
    return {"outcome": _coded(_OUTCOME_JSON, outcome), "rule": _coded(rules, rule),
            "price": b"null"}


def price_columns(price: npt.NDArray[np.float64], rule: npt.NDArray[np.int8]
                  ) -> dict[str, Column]:
    """outcome / rule / price of swept prices (rule codes into PRICE_RULES)."""
    return {"outcome": b'"price"', "price": json_pieces(price.tolist()),
            "rule": _coded(_PRICE_RULE_JSON, rule)}


def degraded_columns(mask: npt.NDArray[np.int64]) -> dict[str, Column]:
    """degraded / degraded_reasons from each event's bit mask over DEGRADED_REASONS."""
    if not mask.any():
        return {"degraded": b"false", "degraded_reasons": b"[]"}
    return {"degraded": json_pieces((mask > 0).tolist()),
            "degraded_reasons": _DEGRADED_JSON[mask].tolist()}


def reason_column(n: int, reasons: Mapping[int, list[Reason]]) -> Column:
    """Each event's reason codes (``[]`` for the rows not in ``reasons``)."""
    if not reasons:
        return b"[]"
    col = [b"[]"] * n
    for j, rs in reasons.items():
        col[j] = _encode(rs)
    return col


def count_column(counts: npt.NDArray[np.integer[Any]]) -> Column:
    """An integer per event, or one shared ``0``."""
    return json_pieces(counts.tolist()) if counts.any() else b"0"


def age_columns(ages: npt.NDArray[np.float64]) -> list[list[bytes]] | None:
    """feature_age_s values per view (rounded to ms; NaN -> null), or None for no views."""
    n, k = ages.shape
    if not k:
        return None
    flat = json_pieces(ages.round(3).T.ravel().tolist())
    return [flat[v * n: (v + 1) * n] for v in range(k)]


def flag_column(flags: npt.NDArray[np.bool_]) -> Column:
    """``true``/``false`` per event, or one shared ``false`` when no flag is set."""
    return json_pieces(flags.tolist()) if flags.any() else b"false"


def source_columns(
    sources: Sequence[tuple[str, int, int]] | None, idx: list[int]
) -> dict[str, Column]:
    """source_topic / _partition / _offset of the decoded events (batch positions ``idx``)."""
    if sources is None:
        return {"source_topic": b'""', "source_partition": b"-1", "source_offset": b"-1"}
    picked = sources if len(idx) == len(sources) else list(map(sources.__getitem__, idx))
    # Three C-level passes; zip(*picked) would allocate an iterator per event.
    topics = list(map(itemgetter(0), picked))
    partitions = list(map(itemgetter(1), picked))
    offsets = list(map(itemgetter(2), picked))
    distinct = set(topics)
    topic: Column
    if len(distinct) == 1:
        topic = constant(topics[0])
    else:
        body = dict(zip(distinct, string_pieces(list(distinct)), strict=True))
        topic = [body[t] for t in topics]
    return {"source_topic": topic, "source_partition": json_pieces(partitions),
            "source_offset": json_pieces(offsets)}


class DecisionEncoder:
    """Joins per-batch constants and per-event pieces into Decision JSON records."""

    def __init__(self, views: Sequence[str]) -> None:
        self.views = tuple(views)
        self._view_keys = [_encode(v) for v in self.views]
        self._heads = [(name, b'"' + name.encode() + b'":', name in _STR_FIELDS)
                       for name in DECISION_FIELDS]

    def encode(self, n: int, fields: Mapping[str, Column], ages: list[list[bytes]] | None
               ) -> list[bytes]:
        """``n`` records from every Decision field's column (``feature_age_s`` aside).

        ``ages`` holds one piece column per view (``self.views`` order), or None for an
        empty ``feature_age_s``.
        """
        # Record i = texts[0] + columns[0][i] + texts[1] + ... + columns[-1][i] + texts[-1]:
        # the constant JSON between per-event pieces, then one b"".join per record over
        # zip(repeat(text), column, ...). join sizes the record once and copies; the
        # former bytes ``%`` template grew its buffer per slot (~20% dearer at 15 slots).
        texts: list[bytes] = []
        columns: list[list[bytes]] = []
        text = b"{"
        sep = b""
        for name, head, is_str in self._heads:
            text += sep + head
            sep = b","
            if name == "feature_age_s":
                if not ages or not self.views:
                    text += b"{}"
                    continue
                for v, (key, age) in enumerate(zip(self._view_keys, ages, strict=False)):
                    if len(age) != n:
                        raise ValueError(f"feature_age_s of {self.views[v]!r}: {len(age)} "
                                         f"values for {n}")
                    texts.append(text + (b"{" if v == 0 else b",") + key + b":")
                    columns.append(age)
                    text = b""
                text += b"}"
                continue
            try:
                col = fields[name]
            except KeyError:
                raise KeyError(f"decision field {name!r} has no value in the encoder's "
                               "input (stream.core.records follows schemas.decisions)") from None
            if isinstance(col, bytes):  # shared by the batch: part of the constant text
                text += col
                continue
            if len(col) != n:
                raise ValueError(f"decision field {name!r}: {len(col)} values for {n}")
            texts.append(text + b'"' if is_str else text)
            columns.append(col)
            text = b'"' if is_str else b""
        texts.append(text + b"}")
        if not columns:
            return [texts[0]] * n
        parts: list[Iterable[bytes]] = []
        for t, col in zip(texts, columns, strict=False):
            parts += (repeat(t), col)
        parts.append(repeat(texts[-1]))
        # strict=False: the repeats are endless; every column was checked to hold n.
        return list(map(b"".join, zip(*parts, strict=False)))
