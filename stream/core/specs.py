"""What the batch core is built from: the event's spec and a loaded model.

``event_spec`` reads, from the pipeline file and the registered event schema, which
field keys the decision record, which is the event's time, and which fields are
strings (kept as object columns); ``LoadedModel`` is a compiled model with the registry
facts (name, version, sha256) every record carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from schemas.errors import ConfigError
from schemas.registry import schema_type

__all__ = ["EventSpec", "LoadedModel", "Scorer", "event_spec"]


@dataclass(frozen=True)
class EventSpec:
    """What the core needs to know about the input event."""

    schema: str
    key: str  # integer entity field the decision record is keyed by
    id_field: str  # the event's unique id (text)
    time_field: str  # the event's own time, unix seconds
    fields: tuple[str, ...]  # every field, in the schema's order
    strings: tuple[str, ...]  # string fields (kept as object columns)


def event_spec(schema: str, key: str, time_field: str, id_field: str = "event_id",
               source: str = "") -> EventSpec:
    """The spec of a registered event schema; a key or time field it lacks is a
    ``ConfigError``."""
    try:
        struct = schema_type(schema)
    except Exception as exc:
        raise ConfigError(f"{source or 'pipeline'}: unknown event schema {schema!r}: "
                          f"{exc}") from None
    info = msgspec.inspect.type_info(struct)
    types = {f.name: _bare(f.type) for f in info.fields}  # type: ignore[attr-defined]

    def need(name: str, what: str, kinds: tuple[type, ...]) -> None:
        if name not in types:
            raise ConfigError(f"{source or 'pipeline'}: event.{what} {name!r} is not a "
                              f"field of {schema} ({', '.join(types)})")
        if not isinstance(types[name], kinds):
            raise ConfigError(f"{source or 'pipeline'}: event.{what} {name!r} of {schema} "
                              f"must be {' or '.join(k.__name__ for k in kinds)}")

    need(key, "key", (msgspec.inspect.IntType,))
    need(time_field, "time_field", (msgspec.inspect.IntType, msgspec.inspect.FloatType))
    need(id_field, "id_field", (msgspec.inspect.StrType,))
    strings = tuple(n for n, t in types.items() if _is_text(t))
    return EventSpec(schema, key, id_field, time_field, tuple(types), strings)


def _bare(t: Any) -> Any:
    """A field's type without its constraints' metadata wrapper."""
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t


def _is_text(t: Any) -> bool:
    """Whether a field decodes to text: a string, or a literal of strings."""
    if isinstance(t, msgspec.inspect.StrType):
        return True
    if isinstance(t, msgspec.inspect.LiteralType):
        return any(isinstance(v, str) for v in t.values)
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_is_text(_bare(u)) for u in t.types)
    return False


class Scorer(Protocol):
    """What the core needs from a compiled model (``scorers.CompiledModel`` fits)."""

    feature_names: Sequence[str]

    def predict(self, X: Any, raw_score: bool = ...) -> Any: ...


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score, with the registry facts the audit record carries."""

    name: str
    version: str
    sha256: str
    scorer: Any  # Scorer; ``contributions(X)`` used for reason codes when present
    reference: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.scorer.feature_names)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

