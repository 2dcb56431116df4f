"""Wire types of every topic (msgspec Structs), their JSON Schema files, decode helpers.

The lowest layer: imports only the standard library and msgspec.
"""

from schemas.deadletter import ERROR_CODES, DeadLetter
from schemas.decisions import OUTCOMES, Decision, Reason, StageLatencies
from schemas.errors import ConfigError, InfrastructureError, StreamscoreError
from schemas.events import FraudTransaction, PricingRequest
from schemas.registry import SCHEMAS, DecodedBatch, Rejection, decode_batch, decoder_for

__all__ = [
    "ERROR_CODES",
    "OUTCOMES",
    "SCHEMAS",
    "ConfigError",
    "DeadLetter",
    "Decision",
    "DecodedBatch",
    "FraudTransaction",
    "InfrastructureError",
    "PricingRequest",
    "Reason",
    "Rejection",
    "StageLatencies",
    "StreamscoreError",
    "decode_batch",
    "decoder_for",
]
