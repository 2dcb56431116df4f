"""The benchmarked framed-decode variants give the JSON path's answers on the same events."""

from __future__ import annotations

import msgspec
import pytest

from benchmarks.bench_wireformat import decoders, payloads

pytest.importorskip("fastavro")


def test_every_variant_decodes_the_same_events():
    data = payloads(300, seed=3)
    variants = decoders()
    want = [msgspec.structs.astuple(e) for e in variants["json"][1](data["json"]).events]
    assert len(want) == 300
    for name, (source, decode) in variants.items():
        got = decode(data[source])
        assert not got.rejected, name
        assert [msgspec.structs.astuple(e) for e in got.events] == want, name
