"""Protobuf bodies of Schema-Registry-framed payloads, read with the registered descriptor.

After the 5-byte header, a framed Protobuf payload names its message inside the writer's
``.proto`` file by a list of indexes (zigzag varints: the count, then one index per
nesting level; a single ``0`` byte stands for ``[0]``, the file's first message), then
the message itself. The writer schema is the registry's *serialized* form of the file
(a base64 ``FileDescriptorProto``, what ``GET /schemas/ids/{id}?format=serialized``
returns), so no ``.proto`` compiler is needed and the pipeline ships no generated code.

``ProtoFile.record(payload)`` turns one payload into a plain dict for the declared
Struct to validate (``msgspec.convert``): scalars as they are, enums by name, fields
with presence (proto2, proto3 ``optional``, messages) only when set, so a missing one
is ``missing_field``. A proto3 scalar without ``optional`` always has a value (its zero):
Protobuf cannot tell "absent" from zero there. Imports come from the standard library
and msgspec; ``google.protobuf`` is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProtoFile", "read_message_indexes"]

_MAX_INDEXES = 100  # deeper nesting than any real schema: a corrupt count, not a path


def read_message_indexes(payload: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """The message indexes at ``payload[pos:]`` and the offset of the message after them."""
    count, pos = _zigzag(payload, pos)
    if count == 0:
        return (0,), pos
    if not 0 < count <= _MAX_INDEXES:
        raise ValueError(f"message index count {count} out of range")
    indexes = []
    for _ in range(count):
        value, pos = _zigzag(payload, pos)
        indexes.append(value)
    return tuple(indexes), pos


def _zigzag(payload: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(payload) or shift > 63:
            raise ValueError("truncated or overlong varint in the message indexes")
        byte = payload[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos


# The files a registered schema may import without a schema reference: Protobuf's own.
_WELL_KNOWN = ("any", "duration", "empty", "field_mask", "struct", "timestamp", "wrappers")


@dataclass
class _Message:
    """A message type of the file: its class and how to read its fields into a dict."""

    cls: Any
    fields: tuple[tuple[str, bool, dict[int, str] | None, bool], ...]


@dataclass
class ProtoFile:
    """One registered ``.proto`` file, its message types built on first use."""

    pool: Any
    proto: Any
    _messages: dict[tuple[int, ...], _Message] = field(default_factory=dict)

    @classmethod
    def from_serialized(cls, text: str) -> ProtoFile:
        """From the registry's base64 ``FileDescriptorProto``; ``ValueError`` if unusable."""
        from google.protobuf import descriptor_pb2, descriptor_pool
        from google.protobuf.message import DecodeError

        try:
            proto = descriptor_pb2.FileDescriptorProto.FromString(
                base64.b64decode(text, validate=True))
        except (binascii.Error, DecodeError, ValueError) as exc:
            raise ValueError(f"not a serialized FileDescriptorProto ({exc}); the registry "
                             "must be asked for format=serialized") from None
        pool = descriptor_pool.DescriptorPool()
        for dep in proto.dependency:
            pool.AddSerializedFile(_well_known(dep))
        if not proto.name:
            proto.name = "registered.proto"
        try:
            pool.Add(proto)
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"descriptor does not build: {exc}") from None
        return cls(pool, proto)

    def _message(self, indexes: tuple[int, ...]) -> _Message:
        known = self._messages.get(indexes)
        if known is not None:
            return known
        from google.protobuf import message_factory

        names, level = [], self.proto.message_type
        for index in indexes:
            if not 0 <= index < len(level):
                raise ValueError(f"message index {index} out of range ({len(level)} there)")
            names.append(level[index].name)
            level = level[index].nested_type
        full = ".".join(([self.proto.package] if self.proto.package else []) + names)
        desc = self.pool.FindMessageTypeByName(full)
        plan = tuple(
            (f.name, f.has_presence,
             {v.number: v.name for v in f.enum_type.values} if f.enum_type else None,
             f.is_repeated) for f in desc.fields)
        msg = _Message(message_factory.GetMessageClass(desc), plan)
        self._messages[indexes] = msg
        return msg

    def record(self, payload: bytes, pos: int) -> dict[str, Any]:
        """The message at ``payload[pos:]`` (indexes first) as a dict of its fields.

        Raises ``ValueError`` (bad indexes) or protobuf's ``DecodeError`` (bad body).
        """
        indexes, pos = read_message_indexes(payload, pos)
        msg_type = self._message(indexes)
        msg = msg_type.cls.FromString(payload[pos:])
        out: dict[str, Any] = {}
        for name, presence, enum, repeated in msg_type.fields:
            if presence and not msg.HasField(name):
                continue
            value = getattr(msg, name)
            if repeated:
                value = [enum.get(v, v) for v in value] if enum else list(value)
            elif enum is not None:
                value = enum.get(value, value)
            out[name] = value
        return out


def _well_known(dep: str) -> bytes:
    import importlib

    for name in _WELL_KNOWN:
        if dep == f"google/protobuf/{name}.proto":
            module = importlib.import_module(f"google.protobuf.{name}_pb2")
            return bytes(module.DESCRIPTOR.serialized_pb)
    raise ValueError(f"imports {dep}: schema references are not supported")
