"""Errors raised by the scorer package (model files it cannot compile, inputs it cannot score)."""

from __future__ import annotations

from schemas.errors import StreamscoreError

__all__ = ["ModelFormatError"]


class ModelFormatError(StreamscoreError, ValueError):
    """A LightGBM model text is corrupt, truncated or uses a feature this compiler lacks.

    It is also a ``ValueError`` so callers that only know the standard library can
    catch it; the message names the tree and field at fault.
    """
