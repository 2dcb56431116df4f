"""Generate the JSON Schema file of every wire type into ``schemas/jsonschema/``.

``python -m schemas.generate`` rewrites the files; ``--check`` exits 1 when a checked-in
file differs from what the Structs generate (the sync test uses ``render_all``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.registry import BUILTIN_SCHEMAS, SCHEMAS
from schemas.schemadoc import json_schema

__all__ = ["JSONSCHEMA_DIR", "render", "render_all", "write_all"]

JSONSCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def render(name: str) -> str:
    """The JSON Schema text of one registered type (stable key order, newline at end)."""
    doc = json_schema(SCHEMAS[name])
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": name, **doc}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    """File name -> text for every registered type."""
    return {f"{name}.json": render(name) for name in sorted(BUILTIN_SCHEMAS)}


def write_all(directory: Path = JSONSCHEMA_DIR) -> list[Path]:
    """Write every schema file; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_all().items():
        path = directory / fname
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on drift")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            f for f, text in render_all().items()
            if not (JSONSCHEMA_DIR / f).exists() or (JSONSCHEMA_DIR / f).read_text() != text
        ]
        for f in stale:
            print(f"out of date: schemas/jsonschema/{f}")
        return 1 if stale else 0
    for path in write_all():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
