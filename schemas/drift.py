"""Wire type of the drift topic: one ``DriftRecord`` per closed monitoring window.

A record says which pipeline and model it watches, which events it covers (window start
and end as Unix seconds, ``n`` events), and for every model feature and for the score the
drift statistics against the model's training reference, the calibrated PSI threshold and
whether it alarmed. Statistics that are not defined for a feature (KS and Wasserstein of
a categorical feature, or of a window without present values) are ``null``.

``DriftRecordEncoder`` writes the same bytes as ``encode_drift(DriftRecord(...))`` from
columns of numbers (the drift monitor's statistics table), without a ``FeatureDrift``
per feature: the monitor's hot path. Readers decode them into ``DriftRecord``.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Sequence
from itertools import compress, repeat
from operator import gt
from typing import Literal

import msgspec

from schemas.schemadoc import json_schema

__all__ = [
    "DRIFT_SCHEMA_VERSION",
    "DecisionMix",
    "DriftRecord",
    "DriftRecordEncoder",
    "FeatureDrift",
    "decode_drift",
    "drift_json_schema",
    "encode_drift",
]

DRIFT_SCHEMA_VERSION = 1


class FeatureDrift(msgspec.Struct, frozen=True, kw_only=True):
    """Drift of one feature (or of the score) in one window."""

    name: str
    kind: Literal["numeric", "categorical", "score"]
    psi: float
    # PSI above which the window alarms at the record's false_alarm_rate (0 when the
    # reference has a single bin: then any change at all is drift).
    threshold: float
    alarm: bool
    # The conventional, uncalibrated reading of PSI: < 0.1, < 0.25, above.
    level: Literal["stable", "moderate", "significant"]
    js: float
    ks: float | None = None
    wasserstein: float | None = None
    missing_rate: float
    reference_missing_rate: float
    bins: int


class DecisionMix(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy decided in the window: counts and shares per outcome (fraud), and
    the mean price multiplier (pricing)."""

    counts: dict[str, int] = {}
    shares: dict[str, float] = {}
    mean_multiplier: float | None = None


class DriftRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One closed window of the drift monitor (key on the topic: the pipeline name)."""

    schema_version: int = DRIFT_SCHEMA_VERSION
    pipeline: str
    model_name: str
    model_version: str
    model_sha256: str
    window_start: float
    window_end: float
    # What closed the window's last sub-window: its event count, its time span, or a
    # flush at shutdown.
    closed_by: Literal["count", "time", "flush"]
    n: int
    reference_n: int
    false_alarm_rate: float
    features: list[FeatureDrift]
    score: FeatureDrift
    decisions: DecisionMix = DecisionMix()
    page_hinkley_alarms: int = 0
    # Names of alarming features, "score" and "page_hinkley" when they fired.
    alarms: list[str] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DriftRecord)


def encode_drift(record: DriftRecord | bytes) -> bytes:
    """JSON bytes of a record (bytes, as the drift monitor returns records, pass as is)."""
    if type(record) is bytes:
        return record
    return _encoder.encode(record)


def decode_drift(data: bytes | str) -> DriftRecord:
    """A record from JSON (``msgspec.ValidationError`` / ``DecodeError`` if malformed)."""
    return _decoder.decode(data)


def drift_json_schema() -> dict[str, object]:
    """JSON Schema of the drift topic's records."""
    return json_schema(DriftRecord)


# -- column-wise encoding -----------------------------------------------------------------
# Positional, untracked (gc=False) twins of the Structs above, with the same field names in
# the same order, hence the same JSON. A drift close builds one row per feature with one
# map() over the statistics' columns. Measured on a 41-feature record (warm, 2 shared
# cores): FeatureDrift objects + encode_drift 32 us; these rows 29 us; a %-template filled
# with one piece per number (as stream.core.records does for decisions) 43 us: here the pieces
# are mostly floats, whose formatting is the bulk of the cost either way, and splitting
# and joining ~300 pieces costs more than building 41 rows in C.


class _FeatureRow(msgspec.Struct, gc=False):
    name: str
    kind: str
    psi: float
    # Pre-rendered: the same for every window of the same size (the threshold) or of the
    # monitor (the reference's rate), so their floats are formatted once, not per close.
    threshold: msgspec.Raw
    alarm: bool
    level: str
    js: float
    ks: float  # NaN is written as null, like FeatureDrift's None
    wasserstein: float
    missing_rate: float
    reference_missing_rate: msgspec.Raw
    bins: int


class _Head(msgspec.Struct):
    schema_version: int
    pipeline: str
    model_name: str
    model_version: str
    model_sha256: str


class _Tail(msgspec.Struct):
    window_start: float
    window_end: float
    closed_by: str
    n: int
    reference_n: int
    false_alarm_rate: float
    features: list[_FeatureRow]
    score: _FeatureRow
    decisions: DecisionMix
    page_hinkley_alarms: int
    alarms: list[str]


if (_FeatureRow.__struct_fields__ != FeatureDrift.__struct_fields__
        or _Head.__struct_fields__ + _Tail.__struct_fields__ != DriftRecord.__struct_fields__):
    raise ImportError("schemas.drift: the column encoder's fields no longer follow the Structs")

_LEVELS = ("stable", "moderate", "significant")
_LEVEL_EDGES = (0.1, 0.25)  # the conventional PSI levels: < 0.1, < 0.25, above


class DriftRecordEncoder:
    """JSON of one pipeline's drift records from columns: ``encode(...)`` returns exactly
    ``encode_drift(DriftRecord(...))`` for the same values, and the record's alarms.

    ``names``, ``kinds`` and ``bins`` describe the features in order, the score last
    (kind ``"score"``; its alarm is named ``"score"``); the rest of a record's constant
    fields are given here once.
    """

    def __init__(self, *, pipeline: str, model_name: str, model_version: str,
                 model_sha256: str, reference_n: int, false_alarm_rate: float,
                 names: Sequence[str], kinds: Sequence[str], bins: Sequence[int]) -> None:
        if not len(names) == len(kinds) == len(bins) or not names or kinds[-1] != "score":
            raise ValueError("names, kinds and bins of the features, the score last")
        head = _encoder.encode(_Head(DRIFT_SCHEMA_VERSION, pipeline, model_name,
                                     model_version, model_sha256))
        self._head = head[:-1] + b","  # the record's object, open after its head fields
        self._reference_n = int(reference_n)
        self._false_alarm_rate = float(false_alarm_rate)
        self._names = list(names)
        self._alarm_names = [*names[:-1], "score"]
        self._kinds = list(kinds)
        self._bins = [int(b) for b in bins]
        # Columns of numbers that repeat from window to window: last values -> JSON.
        self._raw: dict[str, tuple[list[float], list[msgspec.Raw]]] = {}

    def _rendered(self, key: str, values: list[float]) -> list[msgspec.Raw]:
        last = self._raw.get(key)
        if last is not None and last[0] == values:  # NaN never equals: re-rendered
            return last[1]
        raw = [msgspec.Raw(piece) for piece in _encoder.encode(values)[1:-1].split(b",")]
        self._raw[key] = (values, raw)
        return raw

    def encode(
        self, *, window_start: float, window_end: float, closed_by: str, n: int,
        psi: list[float], threshold: list[float], js: list[float], ks: list[float],
        wasserstein: list[float], missing_rate: list[float],
        reference_missing_rate: list[float], decisions: DecisionMix,
        page_hinkley_alarms: int,
    ) -> tuple[bytes, list[str]]:
        """``(record bytes, alarms)``: one value per feature (score last) in each list;
        NaN KS / Wasserstein are written as null; alarm = ``psi > threshold``; level =
        the conventional PSI level; alarms = the alarming features, ``"score"``, and
        ``"page_hinkley"`` when ``page_hinkley_alarms``."""
        alarm = list(map(gt, psi, threshold))
        level = map(_LEVELS.__getitem__, map(bisect, repeat(_LEVEL_EDGES), psi))
        rows = list(map(_FeatureRow, self._names, self._kinds, psi,
                        self._rendered("threshold", threshold), alarm, level, js, ks,
                        wasserstein, missing_rate,
                        self._rendered("reference_missing_rate", reference_missing_rate),
                        self._bins))
        score = rows.pop()
        alarms = list(compress(self._alarm_names, alarm))
        if page_hinkley_alarms:
            alarms.append("page_hinkley")
        tail = _Tail(window_start, window_end, closed_by, n, self._reference_n,
                     self._false_alarm_rate, rows, score, decisions, page_hinkley_alarms,
                     alarms)
        return self._head + _encoder.encode(tail)[1:], alarms
