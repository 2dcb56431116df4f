"""Name -> wire type of every topic, one decoder per type, and batch decode/validate.

Decoders and encoders are created once at import (msgspec's advice: reuse them).
``decode_batch`` is the only per-event Python work on the hot path: it decodes each
payload with the prebuilt typed decoder and sorts failures into stable error codes
(``schemas.deadletter.ERROR_CODES``) so the dead-letter topic can be counted by reason.

``decode_batch(..., fast=True)`` gives the same accepted events and the same rejections
(codes and messages) faster: msgspec runs a field's regex ``pattern`` once per event
(for the fraud transaction's currency and country that was ~0.7 of its ~1.1 us per
event), so a twin Struct without the patterns decodes the batch and each pattern is
then searched once per *distinct* value of its field (a handful per batch). Any
payload the twin rejects, or whose value fails a pattern, is decoded again by the
strict decoder, whose error becomes the rejection: errors read exactly as before.

Whatever one payload contains, its worst outcome is one ``Rejection``: nesting deeper
than the decoder's recursion limit is ``too_deep`` (msgspec raises ``RecursionError``,
which once escaped the batch), and a known field given twice is ``duplicate_key``
(JSON parsers, msgspec included, keep the last value silently, so a second ``amount``
or ``country`` could slip past whatever read the first). The duplicate check counts
``:`` over the whole batch (see ``_check_duplicate_keys``); only payloads with more
keys than known fields are looked at one by one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Annotated, Any, get_args, get_origin

import msgspec

from schemas.deadletter import DeadLetter
from schemas.decisions import Decision
from schemas.errors import ConfigError
from schemas.events import FraudTransaction, PricingRequest

__all__ = [
    "BUILTIN_SCHEMAS",
    "DECODERS",
    "SCHEMAS",
    "DecodedBatch",
    "Rejection",
    "classify_error",
    "decode_batch",
    "decoder_for",
    "encoder",
    "pattern_twin",
    "register_schema",
    "schema_type",
]

SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "fraud_transaction": FraudTransaction,
    "pricing_request": PricingRequest,
    "decision": Decision,
    "dead_letter": DeadLetter,
}

try:  # the drift record type is optional in a trimmed tree; register it when present
    from schemas.drift import DriftRecord

    SCHEMAS["drift_record"] = DriftRecord
except ImportError:  # pragma: no cover - depends on the tree's state
    pass

# The types that ship with streamscore (what ``schemas.generate`` writes files for);
# declared events are added to SCHEMAS at run time by ``register_schema``.
BUILTIN_SCHEMAS: tuple[str, ...] = tuple(SCHEMAS)

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(struct) for name, struct in SCHEMAS.items()
}
encoder = msgspec.json.Encoder()


def schema_type(name: str) -> type[msgspec.Struct]:
    """The Struct registered under ``name``; a ``ConfigError`` lists the known names."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ConfigError(
            f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}"
        ) from None


def decoder_for(name: str) -> msgspec.json.Decoder[Any]:
    """The single shared JSON decoder of schema ``name``."""
    schema_type(name)
    return DECODERS[name]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one payload of a batch was rejected."""

    index: int
    code: str
    message: str


@dataclass(slots=True)
class DecodedBatch:
    """The events that decoded (with their batch indices) and the rejections."""

    events: list[Any] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


_AT_VERSION = "at `$.schema_version`"
_RANGE = re.compile(r"Expected `[^`]+` (?:of length )?[<>]=?|Number out of range|length")


# What decoding one payload may raise: msgspec's errors, and RecursionError for nesting
# deeper than the interpreter's recursion limit (C-level recursion guard in msgspec).
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def classify_error(exc: Exception) -> str:
    """The stable error code of a msgspec decode/validation error."""
    if isinstance(exc, RecursionError):
        return "too_deep"
    if not isinstance(exc, msgspec.ValidationError):
        return "not_json"
    text = str(exc)
    if _AT_VERSION in text:
        return "unknown_schema_version"
    if "missing required field" in text:
        return "missing_field"
    if _RANGE.search(text):
        return "out_of_range"
    if "matching regex" in text or "Invalid enum value" in text:
        return "invalid_value"
    if text.startswith("Expected `"):
        return "wrong_type"
    return "invalid_value"


_META_ATTRS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "tz",
               "title", "description", "examples", "extra_json_schema", "extra")


def _without_pattern(meta: msgspec.Meta) -> msgspec.Meta:
    kept = {a: getattr(meta, a) for a in _META_ATTRS if getattr(meta, a) is not None}
    return msgspec.Meta(**kept)


@dataclass(frozen=True)
class _Twin:
    """A pattern-free twin of a Struct: its decoder and the patterns it leaves out."""

    decode: Callable[[bytes], Any]
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    struct: type[msgspec.Struct]


def _twin_of(cls: type[msgspec.Struct]) -> _Twin | None:
    """The twin of ``cls`` (None when it has no top-level ``pattern`` to leave out)."""
    config = cls.__struct_config__
    if cls.__struct_encode_fields__ != cls.__struct_fields__ or config.tag is not None:
        return None  # renamed or tagged fields: not worth mirroring, keep the strict path
    fields: list[Any] = []
    patterns: list[tuple[str, re.Pattern[str]]] = []
    for f in msgspec.structs.fields(cls):
        typ = f.type
        if get_origin(typ) is Annotated:
            base, *metas = get_args(typ)
            found = [m.pattern for m in metas if isinstance(m, msgspec.Meta) and m.pattern]
            if found:
                patterns += [(f.name, re.compile(p)) for p in found]
                typ = Annotated[(base, *(_without_pattern(m) if isinstance(m, msgspec.Meta)
                                         else m for m in metas))]
        if f.required:
            fields.append((f.name, typ))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, typ, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, typ, f.default))
    if not patterns:
        return None
    twin = msgspec.defstruct(
        f"{cls.__name__}Twin", fields, kw_only=True, frozen=config.frozen,
        forbid_unknown_fields=config.forbid_unknown_fields, array_like=config.array_like,
    )
    return _Twin(msgspec.json.Decoder(twin).decode, tuple(patterns), twin)


_TWINS = {name: _twin_of(struct) for name, struct in SCHEMAS.items()}


def _message(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to decode"
    return str(exc)


@dataclass(frozen=True)
class _Keys:
    """A Struct's field names as they appear quoted in JSON: required ones, optional ones."""

    names: frozenset[str]
    required: tuple[bytes, ...]
    optional: tuple[bytes, ...]


def _keys_of(cls: type[msgspec.Struct]) -> _Keys:
    fields = msgspec.structs.fields(cls)
    quoted = {f.encode_name: json.dumps(f.encode_name).encode() for f in fields}
    return _Keys(frozenset(quoted),
                 tuple(quoted[f.encode_name] for f in fields if f.required),
                 tuple(quoted[f.encode_name] for f in fields if not f.required))


_KEYS = {name: _keys_of(struct) for name, struct in SCHEMAS.items()}


def pattern_twin(name: str
                 ) -> tuple[type[msgspec.Struct], tuple[tuple[str, re.Pattern[str]], ...]] | None:
    """The pattern-free twin Struct of schema ``name`` and the patterns it leaves out.

    None when ``name`` has no top-level pattern to leave out. For decoders other than
    JSON (``schemas.wireformat`` converts decoded records) that check patterns per
    distinct value like ``decode_batch(..., fast=True)``.
    """
    schema_type(name)
    twin = _TWINS.get(name)
    return None if twin is None else (twin.struct, twin.patterns)


def register_schema(name: str, struct: type[msgspec.Struct]) -> None:
    """Register an input type (a declared event) so ``decode_batch(name, ...)`` decodes it.

    Registering the same Struct again is a no-op; another Struct under a taken name is a
    ``ConfigError`` (two pipelines in one process must not redefine each other's input).
    """
    known = SCHEMAS.get(name)
    if known is struct:
        return
    if known is not None and msgspec.json.schema(known) != msgspec.json.schema(struct):
        raise ConfigError(f"schema {name!r} is already registered with other fields")
    SCHEMAS[name] = struct
    DECODERS[name] = msgspec.json.Decoder(struct)
    _TWINS[name] = _twin_of(struct)
    _KEYS[name] = _keys_of(struct)


class _PairsDict(dict[str, Any]):
    """A decoded JSON object that remembers which of its keys were given twice."""

    duplicates: frozenset[str] = frozenset()


def _pairs(pairs: list[tuple[str, Any]]) -> _PairsDict:
    obj = _PairsDict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = frozenset(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return obj


def _duplicate_keys(payload: bytes, names: frozenset[str]) -> list[str]:
    """The known top-level fields that ``payload`` gives more than once (exact check)."""
    try:
        doc = json.loads(payload, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return []  # it decoded with msgspec; nothing more to learn here
    return sorted(doc.duplicates & names) if isinstance(doc, _PairsDict) else []


def _check_duplicate_keys(out: DecodedBatch, payloads: Sequence[bytes | None],
                          keys: _Keys) -> None:
    """Reject accepted events whose payload names a known field twice.

    Every key is followed by a ``:``, and an accepted payload has each required key, so
    a batch whose ``:`` total equals (required keys x events) + (payloads naming each
    optional key), with no payload naming an optional key twice, has no key beyond the
    known ones and none twice: done, at the cost of one ``bytes.count`` over the joined
    batch plus one per payload and optional key. Otherwise (extra fields, a ``:``
    inside a string, a duplicate) the payloads with more ``:`` than known keys are
    counted key by key, and only one with a known key seen twice is parsed exactly.
    """
    accepted: list[bytes] = list(map(payloads.__getitem__, out.indices))  # type: ignore[arg-type]
    n, floor = len(accepted), len(keys.required)
    present, twice = 0, False
    for k in keys.optional:  # how many payloads name it, and whether one names it twice
        occurrences = list(map(bytes.count, accepted, repeat(k)))
        present += n - occurrences.count(0)
        twice = twice or max(occurrences) > 1
    if not twice and b"\0".join(accepted).count(b":") == floor * n + present:
        return
    colons = list(map(bytes.count, accepted, repeat(b":")))
    rows = [j for j, c in enumerate(colons) if c > floor]
    if twice:
        rows = list(range(n))
    if not rows:
        return
    bad: dict[int, list[str]] = {}
    quoted = keys.required + keys.optional
    for j in rows:
        if any(accepted[j].count(k) > 1 for k in quoted):
            dups = _duplicate_keys(accepted[j], keys.names)
            if dups:
                bad[j] = dups
    if not bad:
        return
    for j, dups in bad.items():
        out.rejected.append(Rejection(out.indices[j], "duplicate_key",
                                      f"field(s) given more than once: {', '.join(dups)}"))
    keep = [j for j in range(len(accepted)) if j not in bad]
    out.events[:] = [out.events[j] for j in keep]
    out.indices[:] = [out.indices[j] for j in keep]
    out.rejected.sort(key=attrgetter("index"))


def decode_batch(
    name: str, payloads: Sequence[bytes | None], *, max_bytes: int = 64 * 1024,
    fast: bool = False,
) -> DecodedBatch:
    """Decode and validate every payload; never raises for bad input.

    ``fast``: decode with the pattern-free twin and check patterns per distinct value
    (see the module docstring). The accepted events carry the same fields and values
    but are instances of the twin type, so only callers reading fields should ask.
    """
    strict = decoder_for(name).decode
    twin = _TWINS.get(name) if fast else None
    decode = twin.decode if twin is not None else strict
    out = DecodedBatch()
    try:  # None payloads raise TypeError here: the careful loop handles them
        clean_sizes = max(map(len, payloads), default=0) <= max_bytes  # type: ignore[arg-type]
    except TypeError:
        clean_sizes = False
    if clean_sizes:
        _decode_runs(out, payloads, decode, strict if twin is not None else None)
    else:
        _decode_each(out, payloads, decode, strict if twin is not None else None, max_bytes)
    events = out.events
    if twin is not None and events:
        _check_patterns(out, twin, payloads, strict)
    if out.events:
        _check_duplicate_keys(out, payloads, _KEYS[name])
    return out


def _decode_runs(out: DecodedBatch, payloads: Sequence[bytes | None],
                 decode: Callable[[bytes], Any], strict: Callable[[bytes], Any] | None
                 ) -> None:
    """Decode runs of good payloads with one C-level ``extend(map(...))`` each.

    ``list.extend`` keeps the items appended before the decoder raised, so a bad payload
    costs only its own handling: the run goes on after it. Sizes were checked already.
    """
    events, indices, rejected = out.events, out.indices, out.rejected
    n, i = len(payloads), 0
    while i < n:
        before = len(events)
        try:
            events.extend(map(decode, payloads[i:] if i else payloads))  # type: ignore[arg-type]
        except _DECODE_ERRORS as exc:
            j = i + len(events) - before  # the payload that failed
            indices.extend(range(i, j))
            payload = payloads[j]
            if not payload:
                rejected.append(Rejection(j, "empty", "empty or missing message value"))
            else:
                # The twin may stop at a later field than the strict decoder: its error.
                err = exc if strict is None else (_strict_error(payload, strict) or exc)
                rejected.append(Rejection(j, classify_error(err), _message(err)))
            i = j + 1
            continue
        indices.extend(range(i, n))
        i = n


def _decode_each(out: DecodedBatch, payloads: Sequence[bytes | None],
                 decode: Callable[[bytes], Any], strict: Callable[[bytes], Any] | None,
                 max_bytes: int) -> None:
    """Payload by payload, for batches holding a missing or oversize payload."""
    events, indices, rejected = out.events, out.indices, out.rejected
    for i, payload in enumerate(payloads):
        if not payload:
            rejected.append(Rejection(i, "empty", "empty or missing message value"))
            continue
        if len(payload) > max_bytes:
            rejected.append(
                Rejection(i, "oversize", f"payload of {len(payload)} bytes > limit {max_bytes}")
            )
            continue
        try:
            events.append(decode(payload))
        except _DECODE_ERRORS as exc:
            err = exc if strict is None else (_strict_error(payload, strict) or exc)
            rejected.append(Rejection(i, classify_error(err), _message(err)))
            continue
        indices.append(i)


def _strict_error(payload: bytes, strict: Callable[[bytes], Any]) -> Exception | None:
    try:
        strict(payload)
    except _DECODE_ERRORS as exc:
        return exc
    return None


def _check_patterns(out: DecodedBatch, twin: _Twin, payloads: Sequence[bytes | None],
                    strict: Callable[[bytes], Any]) -> None:
    """Search each pattern once per distinct value; reject the events that fail one."""
    bad_rows: set[int] = set()
    for name, rx in twin.patterns:
        get = attrgetter(name)
        bad = {v for v in set(map(get, out.events)) if not rx.search(v)}
        if bad:
            bad_rows.update(j for j, ev in enumerate(out.events) if get(ev) in bad)
    if not bad_rows:
        return
    keep_events, keep_indices = [], []
    for j, (ev, i) in enumerate(zip(out.events, out.indices, strict=True)):
        payload = payloads[i]
        assert payload is not None  # it decoded
        exc = _strict_error(payload, strict) if j in bad_rows else None
        if exc is None:
            keep_events.append(ev)
            keep_indices.append(i)
        else:
            out.rejected.append(Rejection(i, classify_error(exc), _message(exc)))
    out.events[:], out.indices[:] = keep_events, keep_indices
    out.rejected.sort(key=attrgetter("index"))
