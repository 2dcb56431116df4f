"""features.resp: RESP replies of HMGETs decoded by the compiled pass, checked against the
plain-Python decoders of features.layout (themselves checked against protobuf), fed to it
in arbitrary chunks."""

from __future__ import annotations

import math

import numpy as np
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from features import layout, resp

VOCAB = ["US", "FR", "", "DE"]
LOOKUP = layout.string_lookup(VOCAB)
# group 0: 3 values (number, string, timestamp); group 1: 2 values (number, timestamp)
KINDS = [resp.SLOT_NUMBER, resp.SLOT_STRING, resp.SLOT_TIMESTAMP, resp.SLOT_NUMBER,
         resp.SLOT_TIMESTAMP]
WIDTH = np.array([3, 2], np.int64)
SLOT0 = np.array([0, 3], np.int64)

NUMBER = st.one_of(
    st.floats(allow_nan=False).map(lambda v: Value(double_val=v).SerializeToString()),
    st.floats(width=32, allow_nan=False).map(lambda v: Value(float_val=v).SerializeToString()),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: Value(int64_val=v).SerializeToString()),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: Value(int32_val=v).SerializeToString()),
    st.booleans().map(lambda v: Value(bool_val=v).SerializeToString()),
    st.integers(0, 2**40).map(lambda v: Value(unix_timestamp_val=v).SerializeToString()),
    st.text(max_size=5).map(lambda v: Value(string_val=v).SerializeToString()),
    st.just(b""),  # a null Value
    st.none(),  # field or hash missing
)
STRING = st.one_of(
    st.sampled_from([*VOCAB, "XX", "de"]).map(lambda v: Value(string_val=v).SerializeToString()),
    st.just(b""),
    st.none(),
)
STAMP = st.one_of(
    st.tuples(st.integers(0, 2**34), st.integers(0, 999_999_999)).map(
        lambda s: Timestamp(seconds=s[0], nanos=s[1]).SerializeToString()
    ),
    st.just(b""),  # all fields zero: the epoch, present
    st.none(),
)


def _bulk(raw: bytes | None) -> bytes:
    return b"$-1\r\n" if raw is None else b"$%d\r\n%s\r\n" % (len(raw), raw)


def _reply(values: list[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(_bulk(v) for v in values)


def _expected(kind: int, raw: bytes | None) -> float:
    if kind == resp.SLOT_NUMBER:
        return layout.decode_scalar(raw)
    if kind == resp.SLOT_TIMESTAMP:
        return layout.decode_timestamp(raw)
    return LOOKUP.get(raw, math.nan) if raw is not None else math.nan


def _parse(stream: bytes, counts: list[int], cuts: list[int]) -> tuple[int, np.ndarray, int]:
    v = resp.Vocabularies([LOOKUP])
    buf = np.frombuffer(stream, np.uint8).copy()
    out = np.full(int(np.dot(counts, WIDTH)), -1.0)
    state = np.zeros(3, np.int64)
    code = resp.MORE
    for end in [*sorted(set(cuts)), len(stream)]:  # more bytes arrive each time
        code = resp.parse_hmget(
            buf, end, state, np.cumsum(counts), WIDTH, SLOT0, np.array(KINDS, np.int8),
            np.zeros(len(KINDS), np.int64), v.buf, v.start, v.length, v.code, v.lo, v.hi, out,
        )
        if code != resp.MORE:
            break
    return code, out, int(state[0])


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(st.tuples(NUMBER, STRING, STAMP), max_size=12),
    second=st.lists(st.tuples(NUMBER, STAMP), min_size=1, max_size=12),
    data=st.data(),
)
def test_replies_decode_like_layout_in_any_chunks(
    first: list[tuple[bytes | None, ...]],
    second: list[tuple[bytes | None, ...]],
    data: st.DataObject,
) -> None:
    stream = b"".join(_reply(list(r)) for r in [*first, *second])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    code, out, pos = _parse(stream, [len(first), len(second)], cuts)
    assert code == resp.DONE and pos == len(stream)
    want = [_expected(KINDS[k], raw) for r in first for k, raw in enumerate(r)]
    want += [_expected(KINDS[3 + k], raw) for r in second for k, raw in enumerate(r)]
    np.testing.assert_array_equal(out, np.array(want, np.float64))


def test_incomplete_stream_asks_for_more() -> None:
    stream = _reply([b"\x29" + bytes(8), b"", b""]) + _reply([None, None])
    for end in range(len(stream)):
        code, _, _ = _parse(stream[:end], [1, 1], [])
        assert code == resp.MORE, end


def test_error_reply_and_protocol_mismatch_are_reported() -> None:
    good = _reply([None, None, None])
    code, _, pos = _parse(good + b"-WRONGTYPE Operation against a key\r\n", [2, 0], [])
    assert code == resp.ERROR_REPLY and pos == len(good)
    code, _, _ = _parse(_reply([None, None]), [1, 0], [])  # width 2, 3 expected
    assert code == resp.UNEXPECTED
    code, _, _ = _parse(b":1\r\n", [1, 0], [])
    assert code == resp.UNEXPECTED
