"""Value types of the ``streamscore`` command line shared by every package's commands.

Each turns the text of one option into a value or raises ``argparse.ArgumentTypeError``,
which the parser prints as one line with exit 2. They live in the first stage so the
commands of ``features``, ``scorers``, ``stream`` and the benchmarks share them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

__all__ = ["fraction", "non_negative", "port", "positive_int"]

T = TypeVar("T")


def _read(text: str, convert: Callable[[str], T], what: str) -> T:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise argparse.ArgumentTypeError(message)


def positive_int(text: str) -> int:
    """A count that must be >= 1."""
    value = _read(text, int, "an integer")
    _require(value >= 1, f"must be >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1]."""
    value = _read(text, float, "a number")
    _require(0.0 <= value <= 1.0, f"must be between 0 and 1, got {value:g}")
    return value


def non_negative(text: str) -> float:
    """A number >= 0 (a rate where 0 means unthrottled, a timeout)."""
    value = _read(text, float, "a number")
    _require(value >= 0.0, f"must be >= 0, got {text}")  # also refuses nan
    return value


def port(text: str) -> int:
    """A TCP port, 0 for any free one, or -1 for off."""
    value = _read(text, int, "a port number")
    _require(-1 <= value <= 65535, f"must be -1 (off), 0 (any free port) or 1-65535, got {value}")
    return value
