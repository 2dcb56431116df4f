"""The root of streamscore's exception tree.

Every error a user can cause (bad config, bad model file, bad input, missing
infrastructure) is a ``StreamscoreError``; the CLI turns it into one clear line and a
non-zero exit. Subpackages define their own subclasses in their ``exceptions`` module.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InfrastructureError", "StreamscoreError"]


class StreamscoreError(Exception):
    """Base class of every error streamscore raises on purpose."""

    exit_code: int = 1


class ConfigError(StreamscoreError):
    """A pipeline file or command-line setting is missing, unknown or of the wrong type."""

    exit_code = 2


class InfrastructureError(StreamscoreError):
    """A broker, Redis server or other external component cannot be started or reached."""
