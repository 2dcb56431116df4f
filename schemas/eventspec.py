"""Input events declared as data: a pipeline's field list (or a JSON Schema / Avro
schema) becomes a typed, validating msgspec Struct, registered like the built-in ones.

A declaration names each field's type (``string``, ``integer``, ``number``, ``boolean``,
``timestamp`` = unix seconds), whether it is required (else its default), and its
constraints (``min``/``max``, ``exclusive_min``/``exclusive_max``, ``min_length``/
``max_length``, ``pattern``, ``enum``). The Struct is built once with
``msgspec.defstruct`` and decoded by the same batch path as every other schema
(``schemas.registry.decode_batch``), so a declared event is validated at msgspec's speed
and every failure is one coded rejection.

Patterns are read as whole-value rules: a trailing ``$`` gets ``(?!\\n)`` in front of
it, because Python's ``$`` (which msgspec uses) also matches before a final newline and
``"KP\\n"`` would pass ``^[A-Z]{2}$``. Timestamps are bounded (2000-01-01 to 2100-01-01
unless the declaration narrows them): milliseconds sent as seconds are caught here;
skew against the worker's clock is the worker's check.

``from_json_schema`` and ``from_avro`` translate the common subset of those languages
(a flat object / record of primitive fields, nullable unions, enums, the numeric and
string constraints) into the same declaration; anything outside the subset is a
``ConfigError`` naming the field, never a silently looser schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from schemas.errors import ConfigError

__all__ = [
    "EventDecl",
    "FieldDecl",
    "build_struct",
    "from_avro",
    "from_json_schema",
]

FieldType = Literal["string", "integer", "number", "boolean", "timestamp"]
_PY: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool,
                        "timestamp": float}
TIME_MIN, TIME_MAX = 946_684_800.0, 4_102_444_800.0  # 2000-01-01, 2100-01-01 (unix s)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldDecl(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One field of a declared event."""

    type: FieldType
    required: bool = True
    default: str | int | float | bool | None = None
    min: float | None = None
    max: float | None = None
    exclusive_min: float | None = None
    exclusive_max: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: list[str | int] | None = None
    description: str = ""


class EventDecl(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A declared input event: its fields, which one is the key, which one is its time."""

    fields: dict[str, FieldDecl]
    key: str
    time: str | None = None
    # Extra fields in a payload are ignored (forward compatible) unless this is set.
    forbid_unknown_fields: bool = False


def _whole_value(pattern: str) -> str:
    if pattern.endswith("$") and not pattern.endswith("\\$") and not pattern.endswith("(?!\\n)$"):
        return pattern[:-1] + "(?!\\n)$"
    return pattern


def _field_type(name: str, decl: FieldDecl) -> Any:
    if decl.enum is not None:
        if not decl.enum:
            raise ConfigError(f"field {name!r}: enum is empty")
        kinds = {type(v) for v in decl.enum}
        want = _PY[decl.type]
        if kinds - {want} and not (want is float and kinds <= {int, float}):
            raise ConfigError(f"field {name!r}: enum values are not all of type {decl.type}")
        return Literal[tuple(decl.enum)]  # type: ignore[misc]
    base = _PY[decl.type]
    meta: dict[str, Any] = {}
    if decl.type in ("integer", "number", "timestamp"):
        meta.update(ge=decl.min, le=decl.max, gt=decl.exclusive_min, lt=decl.exclusive_max)
        if decl.type == "timestamp":
            meta["ge"] = max(TIME_MIN, decl.min) if decl.min is not None else TIME_MIN
            meta["le"] = min(TIME_MAX, decl.max) if decl.max is not None else TIME_MAX
        if decl.type == "integer":  # msgspec wants ints for int bounds
            meta = {k: int(v) if v is not None else None for k, v in meta.items()}
    elif decl.min is not None or decl.max is not None:
        raise ConfigError(f"field {name!r}: min/max apply to numbers, not {decl.type}")
    if decl.type == "string":
        meta.update(min_length=decl.min_length, max_length=decl.max_length)
        if decl.pattern is not None:
            try:
                re.compile(decl.pattern)
            except re.error as exc:
                raise ConfigError(f"field {name!r}: bad pattern: {exc}") from None
            meta["pattern"] = _whole_value(decl.pattern)
    elif decl.pattern is not None or decl.min_length is not None or decl.max_length is not None:
        raise ConfigError(f"field {name!r}: pattern/length apply to strings, not {decl.type}")
    kept = {k: v for k, v in meta.items() if v is not None}
    if decl.description:
        kept["description"] = decl.description
    return Annotated[base, msgspec.Meta(**kept)] if kept else base


def build_struct(name: str, decl: EventDecl) -> type[msgspec.Struct]:
    """The validating Struct of a declared event (class name from ``name``)."""
    if not decl.fields:
        raise ConfigError(f"event {name!r} declares no fields")
    for role, field in (("key", decl.key), ("time", decl.time)):
        if field is not None and field not in decl.fields:
            raise ConfigError(f"event {name!r}: {role} field {field!r} is not a declared field")
    if decl.time is not None and decl.fields[decl.time].type not in ("timestamp", "number"):
        raise ConfigError(f"event {name!r}: time field {decl.time!r} must be a timestamp")
    fields: list[Any] = []
    for fname, f in decl.fields.items():
        if not _NAME.match(fname):
            raise ConfigError(f"event {name!r}: field name {fname!r} is not an identifier")
        typ = _field_type(fname, f)
        if f.required:
            if f.default is not None:
                raise ConfigError(f"field {fname!r}: a required field has no default")
            fields.append((fname, typ))
        else:
            fields.append((fname, typ | None if f.default is None else typ, f.default))
    cls_name = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p) or "Event"
    return msgspec.defstruct(cls_name, fields, kw_only=True, frozen=True,
                             forbid_unknown_fields=decl.forbid_unknown_fields)


# -- JSON Schema ---------------------------------------------------------------------------

_JS_TYPES = {"string": "string", "integer": "integer", "number": "number",
             "boolean": "boolean"}


def _js_type(name: str, prop: dict[str, Any]) -> tuple[str, bool]:
    typ = prop.get("type")
    nullable = False
    if isinstance(typ, list):
        kinds = [t for t in typ if t != "null"]
        nullable = len(kinds) != len(typ)
        if len(kinds) != 1:
            raise ConfigError(f"JSON Schema field {name!r}: union of {typ} is not supported")
        typ = kinds[0]
    if typ is None and "enum" in prop:
        values = prop["enum"]
        typ = "string" if all(isinstance(v, str) for v in values) else "number"
    if typ not in _JS_TYPES:
        raise ConfigError(f"JSON Schema field {name!r}: type {typ!r} is not supported "
                          "(flat objects of string/integer/number/boolean fields)")
    return _JS_TYPES[typ], nullable


def from_json_schema(doc: dict[str, Any], *, key: str, time: str | None = None,
                     timestamps: tuple[str, ...] = ()) -> EventDecl:
    """A declaration from a JSON Schema object (``properties``/``required``)."""
    if doc.get("type", "object") != "object" or not isinstance(doc.get("properties"), dict):
        raise ConfigError("JSON Schema: expected an object with properties")
    required = set(doc.get("required", []))
    stamps = set(timestamps) | ({time} if time else set())
    fields = {}
    for fname, prop in doc["properties"].items():
        typ, nullable = _js_type(fname, prop)
        fields[fname] = FieldDecl(
            type="timestamp" if fname in stamps else typ,  # type: ignore[arg-type]
            required=fname in required and not nullable,
            default=prop.get("default"),
            min=prop.get("minimum"), max=prop.get("maximum"),
            exclusive_min=prop.get("exclusiveMinimum"),
            exclusive_max=prop.get("exclusiveMaximum"),
            min_length=prop.get("minLength"), max_length=prop.get("maxLength"),
            pattern=prop.get("pattern"), enum=prop.get("enum"),
            description=prop.get("description", ""),
        )
    return EventDecl(fields=fields, key=key, time=time,
                     forbid_unknown_fields=doc.get("additionalProperties") is False)


# -- Avro -----------------------------------------------------------------------------------

_AVRO_TYPES = {"string": "string", "int": "integer", "long": "integer", "float": "number",
               "double": "number", "boolean": "boolean"}


def _avro_type(name: str, typ: Any) -> tuple[str, bool, list[str] | None]:
    nullable = False
    if isinstance(typ, list):
        kinds = [t for t in typ if t != "null"]
        nullable = len(kinds) != len(typ)
        if len(kinds) != 1:
            raise ConfigError(f"Avro field {name!r}: union {typ} is not supported")
        typ = kinds[0]
    if isinstance(typ, dict):
        if typ.get("type") == "enum":
            return "string", nullable, list(typ["symbols"])
        logical = typ.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros"):
            raise ConfigError(f"Avro field {name!r}: {logical} is not supported; "
                              "send unix seconds as a double")
        typ = typ.get("type")
    if typ not in _AVRO_TYPES:
        raise ConfigError(f"Avro field {name!r}: type {typ!r} is not supported "
                          "(a flat record of primitive fields)")
    return _AVRO_TYPES[typ], nullable, None


def from_avro(schema: dict[str, Any], *, key: str, time: str | None = None) -> EventDecl:
    """A declaration from an Avro record schema (primitive fields, nullable unions, enums)."""
    if schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        raise ConfigError("Avro: expected a record schema with fields")
    fields = {}
    for f in schema["fields"]:
        fname = f["name"]
        typ, nullable, symbols = _avro_type(fname, f["type"])
        has_default = "default" in f
        fields[fname] = FieldDecl(
            type="timestamp" if fname == time else typ,  # type: ignore[arg-type]
            required=not (nullable or has_default),
            default=f.get("default"), enum=symbols, description=f.get("doc", ""),  # type: ignore[arg-type]
        )
    return EventDecl(fields=fields, key=key, time=time)
