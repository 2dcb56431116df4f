"""Input event types of the two pipelines, with their validation constraints.

Each Struct is the contract of one input topic. The constraints (``Meta``: ranges,
lengths, patterns, enumerations) are checked by msgspec while decoding, so a payload
that decodes is a valid event; everything else goes to the dead-letter topic with the
reason msgspec gave (see ``schemas.registry.decode_batch``).

``schema_version`` is a ``Literal``: a producer on a newer, unknown version is rejected
as ``unknown_schema_version`` instead of being scored under the wrong assumptions.
Unknown extra fields are ignored (forward compatible within a version).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "CHANNELS",
    "EVENT_SCHEMA_VERSION",
    "FraudTransaction",
    "PricingRequest",
]

EVENT_SCHEMA_VERSION = 1
CHANNELS = ("pos", "ecom", "atm", "moto")

EventId = Annotated[
    str, Meta(min_length=1, max_length=128, description="Producer-assigned unique event id.")
]
# Unix seconds between 2000-01-01 and 2100-01-01: catches milliseconds sent as seconds.
EventTime = Annotated[
    float,
    Meta(ge=946_684_800.0, le=4_102_444_800.0, description="When the event happened (unix s)."),
]
Money = Annotated[float, Meta(ge=0.0, le=1e9)]


class FraudTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """A card transaction to score for fraud (topic: the fraud pipeline's input)."""

    event_id: EventId
    card_id: Annotated[int, Meta(ge=0, le=2**63 - 1, description="Card entity key.")]
    merchant_id: Annotated[str, Meta(min_length=1, max_length=64)]
    amount: Annotated[Money, Meta(description="Amount in the transaction currency.")]
    # `(?!\n)`: Python's `$` (msgspec checks patterns with Python's re) also matches
    # before a trailing newline, so "KP\n" passed `^[A-Z]{2}$`; JSON Schema's (ECMA) `$`
    # does not. The lookahead makes both dialects read the pattern alike.
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}(?!\n)$", description="ISO 4217 code.")]
    country: Annotated[
        str, Meta(pattern="^[A-Z]{2}(?!\n)$", description="ISO 3166 alpha-2 code.")
    ]
    channel: Literal["pos", "ecom", "atm", "moto"]
    mcc: Annotated[int, Meta(ge=0, le=9999, description="Merchant category code.")]
    event_time: EventTime
    schema_version: Literal[1] = 1


class PricingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request for a price of one SKU in one store (topic: the pricing pipeline's input)."""

    event_id: EventId
    sku_id: Annotated[int, Meta(ge=0, le=2**63 - 1, description="SKU entity key.")]
    store_id: Annotated[str, Meta(min_length=1, max_length=64)]
    base_price: Annotated[float, Meta(gt=0.0, le=1e7)]
    candidate_price: Annotated[float, Meta(gt=0.0, le=1e7)]
    event_time: EventTime
    schema_version: Literal[1] = 1
