"""Errors the ``features`` package raises on purpose (all are ``StreamscoreError``s)."""

from __future__ import annotations

from schemas.errors import ConfigError, InfrastructureError, StreamscoreError

__all__ = [
    "FeatureDataError",
    "FeatureRepoError",
    "FeatureStoreUnavailable",
    "FeaturesError",
]


class FeaturesError(StreamscoreError):
    """Base class of the feature side's errors."""


class FeatureRepoError(FeaturesError, ConfigError):
    """A feature repo is missing, malformed, or names an unknown pipeline or feature."""


class FeatureDataError(FeaturesError):
    """Offline feature data is missing or does not match the repo's schema."""


class FeatureStoreUnavailable(FeaturesError, InfrastructureError):
    """The online store (Redis) cannot be reached while applying or materializing."""
