"""The root of streamscore's exception tree.

Every error a user can cause (bad config, bad model file, bad input, missing
infrastructure) is a ``StreamscoreError``; the CLI turns it into one clear line and a
non-zero exit. Subpackages define their own subclasses in their ``exceptions`` module.
"""

from __future__ import annotations

__all__ = [
    "EXTRAS",
    "ConfigError",
    "InfrastructureError",
    "MissingExtraError",
    "StreamscoreError",
    "missing_extra",
]

# Import name of an optional dependency -> the extra in pyproject.toml that installs it.
# The worker needs none of them; only the commands that use them import them.
EXTRAS = {"faust": "faust", "matplotlib": "bench", "hdrh": "bench",
          "fastavro": "registry", "authlib": "registry", "httpx2": "registry",
          "cachetools": "registry"}


class StreamscoreError(Exception):
    """Base class of every error streamscore raises on purpose."""

    exit_code: int = 1


class ConfigError(StreamscoreError):
    """A pipeline file or command-line setting is missing, unknown or of the wrong type."""

    exit_code = 2


class InfrastructureError(StreamscoreError):
    """A broker, Redis server or other external component cannot be started or reached."""


class MissingExtraError(StreamscoreError):
    """A command needs an optional dependency that is not installed."""


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line error naming the extra to install, if ``exc`` is about one of them."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return MissingExtraError(f"this command needs {top}, from the '{extra}' extra: "
                             f"pip install 'streamscore[{extra}]'")
