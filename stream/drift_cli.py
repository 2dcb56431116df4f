"""The ``streamscore drift`` command: latest drift windows as a table, PSI plot."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``drift`` to the top-level parser."""
