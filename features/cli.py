"""Subcommands contributed by the `features` package to the ``streamscore`` CLI."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this package's commands to the top-level parser."""
