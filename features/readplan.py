"""Start-up plan of the online reader: what to read from Feast's Redis and where it goes.

Built once per ``features.online.OnlineReader`` from the Feast repo: one ``View`` per
requested view (its Redis field names, output columns, string vocabularies, TTL), views
with the same join keys merged into one ``Group`` (Feast keeps them in one hash, read by
one HMGET per entity, its RESP bytes prebuilt), and the flat tables the compiled passes of
``features.resp`` take (what each reply slot holds; where each view's values land).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import layout, resp
from features.exceptions import FeatureRepoError

__all__ = ["Group", "View", "group_views", "plan_views", "slot_tables", "spread_tables"]

_KINDS = {
    "INT64": layout.KIND_INT64,
    "INT32": layout.KIND_INT32,
    "STRING": layout.KIND_STRING,
    "BYTES": layout.KIND_BYTES,
}
_NUMERIC = {"INT32", "INT64", "FLOAT", "DOUBLE", "BOOL", "UNIX_TIMESTAMP"}


@dataclass
class View:
    """One requested view: its Redis field names, output columns and decoding."""

    name: str  # the name used in Redis field names (versioned if enabled)
    join_keys: tuple[str, ...]
    kinds: tuple[int, ...]
    features: tuple[str, ...]  # requested features, in first-appearance order
    cols: np.ndarray  # their columns in the output matrix
    strings: list[tuple[int, dict[bytes, float]]]  # (feature index, vocabulary lookup)
    ttl: float  # seconds; 0 = no TTL
    fields: list[bytes]  # its hash fields: features then the _ts field
    types: dict[str, Any]  # feature name -> feast ValueType (read_dict only)


@dataclass
class Group:
    """Views with the same join keys: Feast keeps them in one hash, read by one HMGET."""

    join_keys: tuple[str, ...]
    kinds: tuple[int, ...]
    views: list[int]  # indices into the reader's views
    offsets: list[int]  # where each view's fields start in the reply
    width: int  # fields per reply
    cmd_head: bytes  # RESP array header + HMGET
    cmd_tail: bytes  # RESP of the field list
    key_fn: Any  # entity value (or tuple of values) -> Redis key
    template: np.ndarray | None  # one int64 entity's command with the id bytes zeroed
    id_at: int  # where the 8 id bytes go in ``template``
    commands: dict[Any, bytes] = field(default_factory=dict)  # entity -> its HMGET command


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def plan_views(
    store: Any, feature_refs: Sequence[str], vocab: Mapping[str, list[str]], strict: bool
) -> list[View]:
    """One ``View`` per view named in ``feature_refs``: fields, columns, types, TTL."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    versioning = bool(
        getattr(store.config.registry, "enable_online_feature_view_versioning", False)
    )
    by_name = {fv.name: fv for fv in store.list_feature_views()}
    wanted: dict[str, list[tuple[str, int]]] = {}
    for col, ref in enumerate(feature_refs):
        view, sep, feature = ref.partition(":")
        if not sep or view not in by_name:
            raise FeatureRepoError(f"unknown feature reference {ref!r} (expected view:feature)")
        wanted.setdefault(view, []).append((feature, col))
    plans = []
    for view_name, items in wanted.items():
        fv = by_name[view_name]
        fields = {f.name: f for f in fv.features}
        entity_cols = list(fv.entity_columns)
        join_keys = tuple(c.name for c in entity_cols)
        kinds = []
        for c in entity_cols:
            kind = _KINDS.get(c.dtype.to_value_type().name)
            if kind is None:
                raise FeatureRepoError(f"join key {c.name} of {view_name} has an unsupported type")
            kinds.append(kind)
        features, cols, strings, types = [], [], [], {}
        for i, (feature, col) in enumerate(items):
            if feature not in fields:
                raise FeatureRepoError(f"view {view_name} has no feature {feature!r}")
            vtype = fields[feature].dtype.to_value_type()
            types[feature] = vtype
            if vtype.name == "STRING" and feature in vocab:
                strings.append((i, layout.string_lookup(vocab[feature])))
            elif vtype.name not in _NUMERIC and strict:
                raise FeatureRepoError(
                    f"{view_name}:{feature} ({vtype.name}) cannot go into a float matrix"
                    + (" (no vocabulary in vocab.json)" if vtype.name == "STRING" else "")
                )
            features.append(feature)
            cols.append(col)
        name = compute_versioned_name(fv, versioning)
        field_names = [layout.field_name(name, f) for f in features] + [layout.ts_field(name)]
        ttl = fv.ttl.total_seconds() if fv.ttl else 0.0
        plans.append(
            View(
                name=name,
                join_keys=join_keys,
                kinds=tuple(kinds),
                features=tuple(features),
                cols=np.array(cols, dtype=np.int64),
                strings=strings,
                ttl=ttl,
                fields=field_names,
                types=types,
            )
        )
    return plans


def group_views(views: list[View], project: str) -> list[Group]:
    """One HMGET per entity for all views keyed by the same join keys (one hash)."""
    by_keys: dict[tuple[Any, ...], list[int]] = {}
    for j, view in enumerate(views):
        by_keys.setdefault((view.join_keys, view.kinds), []).append(j)
    suffix = project.encode("utf-8")
    groups = []
    for (join_keys, kinds), members in by_keys.items():
        offsets: list[int] = []
        fields: list[bytes] = []
        for j in members:
            offsets.append(len(fields))
            fields += views[j].fields
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        tail = b"".join(_bulk(f) for f in fields)
        template, id_at = None, 0
        if len(join_keys) == 1 and kinds[0] == layout.KIND_INT64:
            # every command has the same length: a template row, then the 8 id bytes
            prefix = layout.entity_key(join_keys, kinds, [0])[:-8]
            start = head + b"$%d\r\n" % (len(prefix) + 8 + len(suffix)) + prefix
            id_at = len(start)
            template = np.frombuffer(start + bytes(8) + suffix + b"\r\n" + tail, np.uint8)
        groups.append(
            Group(
                join_keys=join_keys,
                kinds=kinds,
                views=members,
                offsets=offsets,
                width=len(fields),
                cmd_head=head,
                cmd_tail=tail,
                key_fn=layout.key_function(project, join_keys, kinds),
                template=template,
                id_at=id_at,
            )
        )
    return groups


def slot_tables(views: list[View], groups: list[Group]) -> tuple[np.ndarray, ...]:
    """What each HMGET reply slot holds, per group, for ``resp.parse_hmget``."""
    kinds: list[int] = []
    vocab_of: list[int] = []
    lookups: list[dict[bytes, float]] = []
    slot0, width = [], []
    for group in groups:
        slot0.append(len(kinds))
        width.append(group.width)
        for j in group.views:
            view = views[j]
            strings = dict(view.strings)
            for i in range(len(view.features)):
                if i in strings:
                    kinds.append(resp.SLOT_STRING)
                    vocab_of.append(len(lookups))
                    lookups.append(strings[i])
                else:
                    kinds.append(resp.SLOT_NUMBER)
                    vocab_of.append(0)
            kinds.append(resp.SLOT_TIMESTAMP)
            vocab_of.append(0)
    v = resp.Vocabularies(lookups)
    return (
        np.array(width, dtype=np.int64),
        np.array(slot0, dtype=np.int64),
        np.array(kinds, dtype=np.int8),
        np.array(vocab_of, dtype=np.int64),
        *(v.buf, v.start, v.length, v.code, v.lo, v.hi),
    )


def spread_tables(views: list[View], groups: list[Group]) -> tuple[np.ndarray, ...]:
    """Where each view's values and timestamp sit in its group's replies (``spread``)."""
    place = {
        j: (g, off)
        for g, grp in enumerate(groups)
        for j, off in zip(grp.views, grp.offsets, strict=True)
    }
    views = views
    nfeat = [len(v.features) for v in views]
    columns: list[Any] = [
        [place[j][0] for j in range(len(views))],  # group
        [place[j][1] for j in range(len(views))],  # offset in the group's reply
        nfeat,
        [v.ttl for v in views],
        np.cumsum([0, *nfeat[:-1]]),  # where its output columns start in ``cols``
        [c for v in views for c in v.cols.tolist()],
    ]
    return tuple(
        np.asarray(c, dtype=np.float64 if k == 3 else np.int64) for k, c in enumerate(columns)
    )
