"""Errors of the scorer package: models it cannot compile, registry and training failures."""

from __future__ import annotations

from schemas.errors import StreamscoreError

__all__ = [
    "IntegrityError",
    "ModelFormatError",
    "ModelNotFoundError",
    "RegistryError",
    "TrainingError",
]


class ModelFormatError(StreamscoreError, ValueError):
    """A LightGBM model text is corrupt, truncated or uses a feature this compiler lacks.

    It is also a ``ValueError`` so callers that only know the standard library can
    catch it; the message names the tree and field at fault.
    """


class RegistryError(StreamscoreError):
    """A registry operation cannot be done as asked (bad name, bad file, corrupt entry)."""


class ModelNotFoundError(RegistryError):
    """No model, version or alias matches the reference."""


class IntegrityError(RegistryError):
    """A model file's sha256 differs from the one recorded when it was registered."""


class TrainingError(RegistryError):
    """Training data or settings are unusable (missing file, unknown column, bad label)."""
