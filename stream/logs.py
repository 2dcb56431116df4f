"""Structured logging, set up once per process: plain text or JSON lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

__all__ = ["JsonFormatter", "setup_logging"]

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra= fields of a log call become keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(doc).decode()


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Configure the root logger once (idempotent); noisy libraries are kept at WARNING."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:
        root.setLevel(logging.INFO)
    for noisy in ("feast", "numba", "urllib3", "asyncio", "matplotlib", "faust", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
