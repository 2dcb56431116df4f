"""The feature side of streamscore: Feast repos, offline data, online reads, request features.

Light on import (no Feast, no Redis): heavy modules (``features.online``,
``features.materialize``, ``features.synthetic``) are imported where they are used.
"""

from features.exceptions import FeatureDataError, FeatureRepoError, FeaturesError
from features.repo import feature_refs, load_vocab, repo_path
from features.request import RequestFeatures, request_spec

__all__ = [
    "FeatureDataError",
    "FeatureRepoError",
    "FeaturesError",
    "RequestFeatures",
    "feature_refs",
    "load_vocab",
    "repo_path",
    "request_spec",
]
