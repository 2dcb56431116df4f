"""Feast's Redis layout rebuilt in features.layout, checked byte for byte against Feast."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from features import layout

I64 = st.integers(-(2**63), 2**63 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(max_size=12)


@given(view=st.text(min_size=1, max_size=20), feature=st.text(min_size=1, max_size=20))
def test_field_names_match_feast(view: str, feature: str) -> None:
    assert layout.field_name(view, feature) == _mmh3(f"{view}:{feature}")
    assert layout.ts_field(view) == f"_ts:{view}".encode()


@given(
    card=I64,
    merchant=TEXT,
    small=I32,
    project=st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
)
def test_entity_keys_match_feast(card: int, merchant: str, small: int, project: str) -> None:
    cases = [
        (["card_id"], [layout.KIND_INT64], [card], [Value(int64_val=card)]),
        (["merchant_id"], [layout.KIND_STRING], [merchant], [Value(string_val=merchant)]),
        (["store"], [layout.KIND_INT32], [small], [Value(int32_val=small)]),
        # composite keys are sorted by join key name, whatever order they come in
        (
            ["merchant_id", "card_id"],
            [layout.KIND_STRING, layout.KIND_INT64],
            [merchant, card],
            [Value(string_val=merchant), Value(int64_val=card)],
        ),
    ]
    for names, kinds, values, protos in cases:
        proto = EntityKey(join_keys=names, entity_values=protos)
        assert layout.entity_key(names, kinds, values) == serialize_entity_key(proto, 3)
        assert layout.redis_key(project, names, kinds, values) == _redis_key(project, proto, 3)


@given(x=st.floats(allow_nan=False), i=I64, j=I32, s=TEXT)
def test_encoders_match_protobuf(x: float, i: int, j: int, s: str) -> None:
    assert layout.encode_double(x) == Value(double_val=x).SerializeToString()
    f32 = struct.unpack("<f", struct.pack("<f", x))[0] if abs(x) < 3e38 else 0.0
    assert layout.encode_float(f32) == Value(float_val=f32).SerializeToString()
    assert layout.encode_int(i) == Value(int64_val=i).SerializeToString()
    assert layout.encode_int(j, layout.KIND_INT32) == Value(int32_val=j).SerializeToString()
    assert layout.encode_string(s) == Value(string_val=s).SerializeToString()
    assert layout.encode_double(math.nan) == b""


@settings(max_examples=60)
@given(
    st.lists(
        st.one_of(
            st.floats().map(lambda v: ("double", v)),
            st.floats(width=32).map(lambda v: ("float", v)),
            I64.map(lambda v: ("int64", v)),
            I32.map(lambda v: ("int32", v)),
            st.booleans().map(lambda v: ("bool", v)),
            st.integers(0, 2**40).map(lambda v: ("unix_timestamp", v)),
            TEXT.map(lambda v: ("string", v)),
            st.lists(st.floats(), max_size=3).map(lambda v: ("double_list", v)),
            st.just(("null", None)),
            st.just(("absent", None)),
        ),
        max_size=40,
    )
)
def test_decode_scalars_matches_protobuf(items: list[tuple[str, object]]) -> None:
    raw: list[bytes | None] = []
    expected = []
    for kind, value in items:
        if kind == "absent":
            raw.append(None)
            expected.append(math.nan)
            continue
        if kind == "null":
            msg = Value()
        elif kind == "double_list":
            msg = Value()
            msg.double_list_val.val.extend(value)  # type: ignore[arg-type]
        else:
            msg = Value(**{f"{kind}_val": value})
        raw.append(msg.SerializeToString())
        which = msg.WhichOneof("val")
        if which is None or which in ("string_val", "double_list_val"):
            expected.append(math.nan)
        else:
            expected.append(float(getattr(msg, which)))
    got = layout.decode_scalars(raw)
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float64))
    one_by_one = [layout.decode_scalar(v) for v in raw]  # the small-batch path
    np.testing.assert_array_equal(np.array(one_by_one, dtype=np.float64), got)


def test_string_lookup_maps_serialized_values_to_codes() -> None:
    lookup = layout.string_lookup(["US", "FR", ""])
    assert lookup[Value(string_val="FR").SerializeToString()] == 1.0
    assert lookup[Value(string_val="").SerializeToString()] == 2.0
    assert Value(string_val="DE").SerializeToString() not in lookup


@given(
    st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 2**34), st.integers(0, 999_999_999))),
        max_size=30,
    )
)
def test_decode_timestamps_matches_protobuf(stamps: list[tuple[int, int] | None]) -> None:
    raw = []
    for s in stamps:
        raw.append(None if s is None else Timestamp(seconds=s[0], nanos=s[1]).SerializeToString())
        if s is not None:
            assert layout.encode_timestamp(*s) == raw[-1]
    got = layout.decode_timestamps(raw)
    np.testing.assert_array_equal([layout.decode_timestamp(v) for v in raw], got)
    want = [math.nan if s is None else s[0] + s[1] / 1e9 for s in stamps]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * 2**34)
    assert np.array_equal(np.isnan(got), [s is None for s in stamps])


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -(2**63), 127, 128, -(2**31)])
def test_varint_edges(value: int) -> None:
    raw = Value(int64_val=value).SerializeToString()
    assert layout.decode_scalars([raw])[0] == float(value)
