"""Wire types of every topic (msgspec Structs), their JSON Schema files, decode helpers.

The lowest layer: imports only the standard library and msgspec.
"""

from schemas.errors import ConfigError, InfrastructureError, StreamscoreError

__all__ = ["ConfigError", "InfrastructureError", "StreamscoreError"]
