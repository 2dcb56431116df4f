"""What the batch core is built from: the scoring spec of each input schema and a model.

``EVENT_SPECS`` says, per input schema, which request features and policy apply, which
field keys the decision record and which fields are strings; ``LoadedModel`` is a
compiled model with the registry facts (name, version, sha256) every record carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["EVENT_SPECS", "EventSpec", "LoadedModel", "Scorer"]


@dataclass(frozen=True)
class EventSpec:
    """What the core needs to know about an input schema."""

    schema: str
    kind: str  # "fraud" | "pricing": which request features and which policy
    key: str  # entity field the decision record is keyed by
    strings: tuple[str, ...]  # string fields (kept as object columns)


EVENT_SPECS = {
    "fraud_transaction": EventSpec(
        "fraud_transaction", "fraud", "card_id", ("event_id", "merchant_id", "currency",
                                                  "country", "channel")
    ),
    "pricing_request": EventSpec("pricing_request", "pricing", "sku_id", ("event_id", "store_id")),
}


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

