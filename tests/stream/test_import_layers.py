"""The package's layout rules, read from the source: one-way imports between the parts of
``stream``, the scoring path free of development tooling, the batch core free of Kafka."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

STREAM = Path(__file__).resolve().parents[2] / "stream"
# What a worker or the Faust app loads to score: it never reaches the dev tooling, the
# command line or the benchmarks.
SCORING_PATH = {"core", "kafka", "drift", "worker", "faust_app", "step", "endpoints", "config",
                "metrics", "logs"}


def _unit(module: str) -> str:
    """``stream.core.pipeline`` -> ``core``; ``stream.worker`` -> ``worker``."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, dict[str, set[str]]]:
    """unit -> {file: imported modules}."""
    out: dict[str, dict[str, set[str]]] = {}
    for path in sorted(STREAM.rglob("*.py")):
        rel = path.relative_to(STREAM.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module == "stream.__init__" or module.endswith(".__main__"):
            continue
        out.setdefault(_unit(module.removesuffix(".__init__")), {})[str(rel)] = _imports(path)
    return out


def test_parts_of_stream_import_each_other_one_way():
    deps = {unit: {_unit(m) for mods in files.values() for m in mods
                   if m.startswith("stream.") and _unit(m) != unit}
            for unit, files in _graph().items()}
    try:
        order = list(TopologicalSorter(deps).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message names the cycle
        raise AssertionError(f"import cycle between parts of stream: {exc.args[1]}") from None
    assert {"core", "kafka", "drift", "cli", "dev"} <= set(order)


def test_scoring_path_imports_no_dev_tooling_cli_or_benchmarks():
    bad = [(file, m) for unit, files in _graph().items() if unit in SCORING_PATH
           for file, mods in files.items() for m in mods
           if m.startswith(("stream.dev", "stream.cli", "benchmarks"))]
    assert bad == []


def test_batch_core_and_drift_know_no_kafka():
    bad = [(file, m) for unit, files in _graph().items() if unit in ("core", "drift")
           for file, mods in files.items() for m in mods
           if m.startswith(("confluent_kafka", "stream.kafka", "faust"))]
    assert bad == []
