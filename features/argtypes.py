"""Value types of the ``streamscore`` command line shared by every package's commands.

Each turns the text of one option into a value or raises ``argparse.ArgumentTypeError``,
which the parser prints as one line with exit 2. They live in the first stage so the
commands of ``features``, ``scorers``, ``stream`` and the benchmarks share them.
"""

from __future__ import annotations

import argparse

__all__ = ["fraction", "non_negative", "port", "positive_int"]


def positive_int(text: str) -> int:
    """A count that must be >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def non_negative(text: str) -> float:
    """A number >= 0 (a rate where 0 means unthrottled, a timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 for any free one, or -1 for off."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not -1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be -1 (off), 0 (any free port) or 1-65535, "
                                         f"got {value}")
    return value
