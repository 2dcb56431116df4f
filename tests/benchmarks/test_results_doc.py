"""benchmarks/RESULTS.md is a results document: summary table first, one section per row."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md"
COLUMNS = ["benchmark", "headline figure", "reference, same run", "command", "date (UTC)",
           "machine (load)", "broker"]
# The project's files speak of the project only: no people, roles, sessions or issues.
FORBIDDEN = re.compile(r"session|engineer|lead|issue #", re.I)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _summary_rows(text: str) -> list[list[str]]:
    section = text.split("\n## ")[1]
    assert section.startswith("Summary\n"), "the first section must be the summary"
    table = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert _cells(table[0]) == COLUMNS
    assert set(table[1]) <= set("|-: ")
    return [_cells(ln) for ln in table[2:]]


def test_the_document_starts_with_the_summary_table() -> None:
    text = RESULTS.read_text()
    assert text.startswith("# Benchmark results\n")
    rows = _summary_rows(text)
    assert len(rows) >= 9
    headings = {h.strip() for h in re.findall(r"^## (.+)$", text, re.M)}
    for row in rows:
        assert len(row) == len(COLUMNS), row
        assert all(row), f"empty cell in {row}"
        assert re.search(r"\d{4}-\d{2}-\d{2}", row[4]), f"no date in {row}"
        # every row links to the section that holds its latest run
        link = re.fullmatch(r"\[(.+)\]\(#([a-z0-9-]+)\)", row[0])
        assert link, f"first cell must link to its section: {row[0]}"
        assert link.group(1) in headings
        assert link.group(2) == link.group(1).lower().replace(" ", "-")


def test_no_people_roles_sessions_or_issue_numbers() -> None:
    hits = [f"{n}: {ln}" for n, ln in enumerate(RESULTS.read_text().splitlines(), 1)
            if FORBIDDEN.search(ln)]
    assert hits == []
