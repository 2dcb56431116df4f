"""JSON Schema documents of the wire Structs, the same whatever msgspec version renders them.

msgspec copies each Struct's docstring into ``description``; 0.23 stopped dedenting it, so
the same Struct rendered differently across versions. Descriptions are normalised here
with ``inspect.cleandoc`` (the dedent Python's own ``help()`` applies), which makes the
checked-in schema files independent of the msgspec release that wrote them.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

__all__ = ["json_schema"]


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def json_schema(tp: Any) -> dict[str, Any]:
    """msgspec's JSON Schema of ``tp`` with every description dedented."""
    return _clean(msgspec.json.schema(tp))
