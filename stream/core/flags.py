"""Degraded flags: one bit mask per event, set from the online read and the stages.

Bit i of a row's mask is ``schemas.decisions.DEGRADED_REASONS[i]``. ``flag_online`` sets
the online store's bits from a read (``features.online.ReadResult``); ``count_reasons``
tallies a batch's masks per reason for the metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.decisions import DEGRADED_REASONS

__all__ = ["BIT", "count_reasons", "flag_online"]

BIT = {name: 1 << i for i, name in enumerate(DEGRADED_REASONS)}
# mask -> tuple of reason names, precomputed so counting only indexes a table.
_REASONS_OF = [
    [name for i, name in enumerate(DEGRADED_REASONS) if mask >> i & 1]
    for mask in range(1 << len(DEGRADED_REASONS))
]


def flag_online(got: Any, mask: npt.NDArray[np.int64], required_views: npt.NDArray[np.bool_]
                ) -> bool:
    """Set each row's online bits from a read; False when nothing was read at all.

    Store down marks every row (``partial``, on Redis Cluster with a node down: only the
    rows not read); a required view's missing row marks ``features_missing``, a stale
    one ``features_stale``.
    """
    down = None
    if got.status == "partial" and got.unavailable is not None:
        down = np.asarray(got.unavailable, dtype=bool)
        mask[down] |= BIT["online_store_down"]
    elif got.status != "ok":
        mask |= BIT["online_store_down"]
        return False
    present, stale = got.present, got.stale
    # The common batch has every row of every view, fresh: two reductions, not ten
    # numpy calls (what they cost shows at small batches).
    if present.shape[1] and not present.all():
        missing = (~present & ~stale & required_views).any(axis=1)
        if down is not None:  # not read is not missing: flagged as store down
            missing &= ~down
        mask[missing] |= BIT["features_missing"]
    if stale.shape[1] and stale.any():
        mask[stale.any(axis=1)] |= BIT["features_stale"]
    return True


def count_reasons(mask: npt.NDArray[np.int64], counter: Counter[str]) -> int:
    """Add the batch's degraded events per reason to ``counter``; the number degraded."""
    n = int(np.count_nonzero(mask))
    if n:  # counts per bit mask (a sort by np.unique cost ~10 us a batch)
        counts = np.bincount(mask, minlength=len(_REASONS_OF)).tolist()
        for m in range(1, len(_REASONS_OF)):
            if counts[m]:
                for reason in _REASONS_OF[m]:
                    counter[reason] += counts[m]
    return n
