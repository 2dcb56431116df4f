"""Schema-Registry-framed payloads (the Confluent wire format) decoded batch-first.

A framed payload is the magic byte ``0``, the writer schema's id (4 bytes, big endian)
and the body: Avro binary (one record, no container header), Protobuf (message indexes,
then the message: ``schemas.wireproto``) or JSON text. One batch may mix writer
schemas (a producer rolled to a new version mid-batch, or several producers):
``FramedDecoder.decode_batch`` groups the payloads by schema id, asks its
``lookup`` once per id it has not seen (the result is cached for the decoder's life;
ids are immutable in a registry), decodes each group with its writer schema and then
validates every decoded record into the pipeline's declared Struct with
``msgspec.convert``: the same constraints and the same error codes as the JSON path.

- Avro: ``fastavro.schemaless_reader`` with the writer schema and, when the pipeline
  declares one, its reader schema, so Avro's schema evolution applies (a writer that
  added a defaulted field, or a reader that added one, decodes).
- Protobuf: the registered file descriptor (the registry's serialized form) builds the
  message type; its fields become a dict (``schemas.wireproto``).
- JSON Schema: the 5-byte header is stripped and the bodies go through
  ``schemas.registry.decode_batch`` (duplicate keys, nesting, patterns included). The
  declared Struct is the validator; the registered JSON Schema is not run.

Every bad payload is one ``Rejection`` (``bad_framing``, ``unknown_schema_id``,
``unsupported_schema``, ``undecodable``, or the JSON path's codes), never an exception.
A registry that cannot be reached is not the event's fault: the lookup raises
``SchemaRegistryUnavailable`` (``retriable``), which propagates out of
``decode_batch`` with nothing rejected, so the worker retries the whole batch later
instead of dead-lettering good events.

Imports only the standard library and msgspec; fastavro and protobuf on first use.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any

import msgspec

from schemas.errors import InfrastructureError, StreamscoreError
from schemas.registry import (
    DecodedBatch,
    Rejection,
    classify_error,
    decode_batch,
    pattern_twin,
    schema_type,
)
from schemas.wireproto import ProtoFile

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_LOOKUPS_PER_BATCH",
    "FramedDecoder",
    "FramedEncoder",
    "SchemaRegistryUnavailable",
    "UnknownSchemaId",
    "WriterSchema",
    "frame",
]

MAGIC = 0
HEADER_SIZE = 5
# An id the registry did not know is asked again after this long (it may have been
# registered since), not once per batch.
UNKNOWN_ID_RETRY_S = 60.0
# Each unseen id costs a registry request while the batch waits: a batch of garbage
# headers (random ids) must not become thousands of requests. Beyond this many unseen
# ids in one batch, the rest are rejected unasked (a real producer adds one at a time).
MAX_LOOKUPS_PER_BATCH = 16
_UNKNOWN_KEPT = 10_000  # negative-cache entries before the expired ones are dropped


class SchemaRegistryUnavailable(InfrastructureError):
    """The registry could not answer (network, 5xx, auth): retry the batch, do not reject."""

    retriable = True


class UnknownSchemaId(StreamscoreError):
    """The registry answered that no schema has this id: the payload's fault."""


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A schema as the registry stores it: id, kind, text, names of its references."""

    schema_id: int
    kind: str
    text: str
    references: tuple[str, ...] = ()


Lookup = Callable[[int], WriterSchema]


def frame(schema_id: int, body: bytes) -> bytes:
    """``body`` with the wire-format header of ``schema_id`` in front."""
    return b"\0" + schema_id.to_bytes(4, "big") + body


def _fastavro() -> Any:
    import fastavro  # the 'registry' extra; only framed pipelines need it

    return fastavro


def _parse_avro(schema: Mapping[str, Any] | str) -> Any:
    doc = json.loads(schema) if isinstance(schema, str) else schema
    # A fresh named_schemas per schema: two versions of one record name must not clash.
    return _fastavro().parse_schema(doc, named_schemas={})


@dataclass(frozen=True, slots=True)
class _Reader:
    """How one writer schema's group is decoded, or why it cannot be (``code``/``why``)."""

    kind: str
    parsed: Any = None
    code: str = ""
    why: str = ""
    resolve_to: Any = None  # Avro: the reader schema, when it differs from the writer's


class FramedDecoder:
    """Decodes batches of framed payloads into the Struct registered as ``name``.

    ``lookup(schema_id)`` returns the ``WriterSchema`` (``stream.kafka.schema_registry``
    builds one over a registry client), raises ``UnknownSchemaId`` when the registry
    has no such id, and ``SchemaRegistryUnavailable`` when it cannot answer.
    ``reader_schema`` is the pipeline's Avro schema, if it declared one (evolution).
    ``fast`` is ``decode_batch``'s: the same events and rejections, patterns checked
    once per distinct value, events are instances of the Struct's pattern-free twin.
    """

    def __init__(self, name: str, lookup: Lookup, *,
                 reader_schema: Mapping[str, Any] | str | None = None,
                 max_bytes: int = 64 * 1024, fast: bool = False) -> None:
        self.name = name
        self.struct = schema_type(name)
        self._lookup = lookup
        self._reader_schema = _parse_avro(reader_schema) if reader_schema is not None else None
        self._max_bytes = max_bytes
        self._fast = fast
        self._readers: dict[int, _Reader] = {}
        self._unknown: dict[int, float] = {}  # id -> monotonic time to ask again
        # fast: convert into the pattern-free twin, check patterns per distinct value.
        self._twin = pattern_twin(name) if fast else None
        target = self._twin[0] if self._twin is not None else self.struct
        self._convert = partial(msgspec.convert, type=target)
        self._convert_all = partial(msgspec.convert, type=list[target])  # type: ignore[valid-type]

    # -- schemas ---------------------------------------------------------------------------

    def _reader(self, schema_id: int) -> _Reader:
        """The cached reader of ``schema_id``; asks the registry on first sight."""
        known = self._readers.get(schema_id)
        if known is not None:
            return known
        retry_at = self._unknown.get(schema_id)
        if retry_at is not None and time.monotonic() < retry_at:
            return _Reader("", code="unknown_schema_id",
                           why=f"schema id {schema_id} is not in the schema registry")
        try:
            writer = self._lookup(schema_id)  # SchemaRegistryUnavailable propagates
        except UnknownSchemaId:
            self._unknown[schema_id] = time.monotonic() + UNKNOWN_ID_RETRY_S
            return self._reader(schema_id)
        self._unknown.pop(schema_id, None)
        reader = self._build_reader(writer)
        self._readers[schema_id] = reader
        return reader

    def _readers_of(self, groups: Mapping[int, list[int]]) -> dict[int, _Reader]:
        readers: dict[int, _Reader] = {}
        asked = 0
        for schema_id in groups:
            if schema_id not in self._readers and schema_id not in self._unknown:
                asked += 1
                if asked > MAX_LOOKUPS_PER_BATCH:
                    readers[schema_id] = _Reader(
                        "", code="unknown_schema_id",
                        why=f"schema id {schema_id} not looked up: more than "
                            f"{MAX_LOOKUPS_PER_BATCH} unseen schema ids in one batch")
                    continue
            readers[schema_id] = self._reader(schema_id)
        if len(self._unknown) > _UNKNOWN_KEPT:
            now = time.monotonic()
            self._unknown = {k: t for k, t in self._unknown.items() if t > now}
        return readers

    def _build_reader(self, writer: WriterSchema) -> _Reader:
        kind = writer.kind.upper()
        where = f"writer schema {writer.schema_id} ({kind})"
        if kind == "JSON":
            return _Reader(kind)
        if kind not in ("AVRO", "PROTOBUF"):
            return _Reader(kind, code="unsupported_schema",
                           why=f"{where}: only AVRO, PROTOBUF and JSON payloads are decoded")
        if writer.references:
            return _Reader(kind, code="unsupported_schema",
                           why=f"{where} references {', '.join(writer.references)}: "
                               "schema references are not supported")
        if kind == "PROTOBUF":
            try:
                return _Reader(kind, ProtoFile.from_serialized(writer.text))
            except ValueError as exc:
                return _Reader(kind, code="unsupported_schema", why=f"{where}: {exc}"[:500])
        try:
            parsed = _parse_avro(writer.text)
        except Exception as exc:  # fastavro raises many kinds for a bad schema
            return _Reader(kind, code="unsupported_schema",
                           why=f"{where} does not parse: {exc}"[:500])
        # fastavro compares writer and reader schema on every call (a deep dict compare)
        # and drops the reader when equal: decide that once per writer schema instead.
        reader = self._reader_schema
        return _Reader(kind, parsed, resolve_to=None if reader == parsed else reader)

    # -- batches ---------------------------------------------------------------------------

    def decode_batch(self, payloads: Sequence[bytes | None]) -> DecodedBatch:
        """Decode and validate every payload; raises only ``SchemaRegistryUnavailable``."""
        out = DecodedBatch()
        groups: dict[int, list[int]] = {}
        rejected = out.rejected
        max_bytes = self._max_bytes
        for i, payload in enumerate(payloads):
            if not payload:
                rejected.append(Rejection(i, "empty", "empty or missing message value"))
            elif len(payload) > max_bytes:
                rejected.append(Rejection(
                    i, "oversize", f"payload of {len(payload)} bytes > limit {max_bytes}"))
            elif len(payload) <= HEADER_SIZE or payload[0] != MAGIC:
                rejected.append(Rejection(i, "bad_framing", _framing_error(payload)))
            else:
                groups.setdefault(int.from_bytes(payload[1:5], "big"), []).append(i)
        # Look every id up before decoding anything: an outage fails the batch up front.
        readers = self._readers_of(groups)
        pairs: list[tuple[list[int], list[Any]]] = []
        for schema_id, rows in groups.items():
            reader = readers[schema_id]
            if reader.code:
                rejected.extend(Rejection(i, reader.code, reader.why) for i in rows)
            elif reader.kind == "JSON":
                pairs.append(self._json_group(payloads, rows, rejected))
            elif reader.kind == "PROTOBUF":
                pairs.append(self._proto_group(reader.parsed, payloads, rows, rejected))
            else:
                pairs.append(self._avro_group(reader, payloads, rows, rejected))
        _merge(out, pairs)
        return out

    def _json_group(self, payloads: Sequence[bytes | None], rows: list[int],
                    rejected: list[Rejection]) -> tuple[list[int], list[Any]]:
        bodies = [payloads[i][HEADER_SIZE:] for i in rows]  # type: ignore[index]
        got = decode_batch(self.name, bodies, max_bytes=self._max_bytes, fast=self._fast)
        rejected.extend(Rejection(rows[r.index], r.code, r.message) for r in got.rejected)
        return [rows[j] for j in got.indices], got.events

    def _avro_group(self, reader: _Reader, payloads: Sequence[bytes | None],
                    rows: list[int], rejected: list[Rejection]
                    ) -> tuple[list[int], list[Any]]:
        read = _fastavro().schemaless_reader
        parsed, reader_schema = reader.parsed, reader.resolve_to
        errors = _avro_errors()
        records: list[Any] = []
        kept: list[int] = []
        for i in rows:
            payload: bytes = payloads[i]  # type: ignore[assignment]
            buf = io.BytesIO(payload)
            buf.seek(HEADER_SIZE)
            try:
                record = read(buf, parsed, reader_schema)
            except errors as exc:
                rejected.append(_avro_rejection(i, exc))
                continue
            if buf.tell() != len(payload):
                rejected.append(Rejection(
                    i, "undecodable",
                    f"{len(payload) - buf.tell()} byte(s) after the Avro record"))
                continue
            records.append(record)
            kept.append(i)
        return self._validate(records, kept, rejected)

    def _proto_group(self, proto: ProtoFile, payloads: Sequence[bytes | None],
                     rows: list[int], rejected: list[Rejection]
                     ) -> tuple[list[int], list[Any]]:
        from google.protobuf.message import DecodeError

        read = proto.record
        records: list[Any] = []
        kept: list[int] = []
        for i in rows:
            try:
                records.append(read(payloads[i], HEADER_SIZE))  # type: ignore[arg-type]
            except (ValueError, DecodeError, RecursionError) as exc:
                rejected.append(Rejection(
                    i, "undecodable",
                    f"Protobuf body does not decode with its writer schema: {exc}"[:500]))
                continue
            kept.append(i)
        return self._validate(records, kept, rejected)

    def _validate(self, records: list[Any], rows: list[int], rejected: list[Rejection]
                  ) -> tuple[list[int], list[Any]]:
        """``msgspec.convert`` the records into the Struct (its twin when ``fast``).

        The whole list in one call first (the common, all-good case); when a record
        fails, C-level runs like the JSON path's, so the error names the field as
        ``$.field`` exactly as a JSON payload's would. With the twin, each pattern is
        searched once per distinct value and the records failing one are converted
        again strictly, whose error becomes the rejection.
        """
        twin = self._twin
        try:
            events = self._convert_all(records)
            kept = list(rows)
        except (msgspec.ValidationError, RecursionError):
            kept, events = self._convert_runs(records, rows, rejected)
        if twin is None or not events:
            return kept, events
        bad: set[int] = set()
        for field, rx in twin[1]:
            get = attrgetter(field)
            failing = {v for v in set(map(get, events)) if not rx.search(v)}
            if failing:
                bad.update(j for j, ev in enumerate(events) if get(ev) in failing)
        if not bad:
            return kept, events
        by_row = dict(zip(rows, records, strict=True))
        keep = [j for j in range(len(events)) if j not in bad]
        for j in sorted(bad):
            try:
                msgspec.convert(by_row[kept[j]], self.struct)
            except msgspec.ValidationError as exc:
                rejected.append(Rejection(kept[j], classify_error(exc), str(exc)))
            else:  # pragma: no cover - the strict Struct holds the same pattern
                keep.append(j)
        keep.sort()
        return [kept[j] for j in keep], [events[j] for j in keep]

    def _convert_runs(self, records: list[Any], rows: list[int], rejected: list[Rejection]
                      ) -> tuple[list[int], list[Any]]:
        convert = self._convert
        events: list[Any] = []
        kept: list[int] = []
        n, i = len(records), 0
        while i < n:
            before = len(events)
            try:
                events.extend(map(convert, records[i:] if i else records))
            except (msgspec.ValidationError, RecursionError) as exc:
                j = i + len(events) - before
                kept.extend(rows[i:j])
                # The twin may stop at a later field than the strict Struct: its error.
                err = exc if self._twin is None else (
                    _strict_error(records[j], self.struct) or exc)
                rejected.append(Rejection(rows[j], classify_error(err), str(err)))
                i = j + 1
                continue
            kept.extend(rows[i:])
            i = n
        return kept, events


def _strict_error(record: Any, struct: type) -> Exception | None:
    try:
        msgspec.convert(record, struct)
    except (msgspec.ValidationError, RecursionError) as exc:
        return exc
    return None


def _merge(out: DecodedBatch, pairs: list[tuple[list[int], list[Any]]]) -> None:
    """Events in batch order (groups interleave when a batch mixes schema ids)."""
    if len(pairs) == 1:
        out.indices, out.events = pairs[0]
    elif pairs:
        merged = sorted(
            ((i, ev) for rows, events in pairs for i, ev in zip(rows, events, strict=True)),
            key=lambda pair: pair[0])
        out.indices = [i for i, _ in merged]
        out.events = [ev for _, ev in merged]
    out.rejected.sort(key=attrgetter("index"))


def _framing_error(payload: bytes) -> str:
    if len(payload) <= HEADER_SIZE:
        return f"{len(payload)} byte(s): shorter than the 5-byte schema registry header"
    if payload[0] == 1:  # Confluent's newer framing: a 16-byte schema GUID, not an id
        return ("magic byte 1 (schema GUID framing) is not supported: the producer's "
                "serializer must write schema ids (magic byte 0)")
    return (f"first byte is {payload[0]}, not the schema registry magic byte 0 "
            "(not written by a schema registry serializer)")


def _avro_errors() -> tuple[type[BaseException], ...]:
    # What a malformed body makes fastavro raise: truncation, a bad union branch or
    # enum index, bad UTF-8, a negative or huge length.
    return (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError,
            StopIteration, MemoryError, _fastavro().read.SchemaResolutionError)


_STREAM_REPR = re.compile(r" from <_io\.BytesIO object at 0x[0-9a-f]+>")


def _avro_rejection(index: int, exc: BaseException) -> Rejection:
    text = _STREAM_REPR.sub("", str(exc)) or type(exc).__name__
    if isinstance(exc, _fastavro().read.SchemaResolutionError):
        # The writer's schema and the pipeline's do not resolve (not compatible).
        return Rejection(index, "unsupported_schema",
                         f"writer schema cannot be read as the pipeline's: {text}"[:500])
    return Rejection(index, "undecodable",
                     f"Avro body does not decode with its writer schema: {text}"[:500])


class FramedEncoder:
    """Encodes records (Structs or dicts) as framed Avro of one registered schema."""

    def __init__(self, schema_id: int, schema: Mapping[str, Any] | str) -> None:
        self.schema_id = schema_id
        self._parsed = _parse_avro(schema)
        self._header = frame(schema_id, b"")

    def encode_batch(self, records: Iterable[Any]) -> list[bytes]:
        """One framed payload per record."""
        write = _fastavro().schemaless_writer
        parsed, header = self._parsed, self._header
        out = []
        for record in records:
            buf = io.BytesIO()
            buf.write(header)
            write(buf, parsed, record if isinstance(record, dict)
                  else msgspec.structs.asdict(record))
            out.append(buf.getvalue())
        return out
