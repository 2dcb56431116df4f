"""Structured logging, set up once per process: plain text or JSON lines (flags or env)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import msgspec

from schemas.errors import ConfigError

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


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")
    return value in _TRUE


def setup_logging(level: str | None = None, *, json_lines: bool | None = None) -> None:
    """Configure the root logger once (idempotent); noisy libraries are kept at WARNING.

    ``None`` reads ``STREAMSCORE_LOG_LEVEL`` (default INFO) and ``STREAMSCORE_LOG_JSON``
    (default off) from the environment, so a container sets them without flags. An
    unknown level or flag value raises ``ConfigError``.
    """
    if level is None:
        level = os.environ.get("STREAMSCORE_LOG_LEVEL") or "INFO"
    if json_lines is None:
        json_lines = _env_flag("STREAMSCORE_LOG_JSON")
    if level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(f"unknown log level {level!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("feast", "numba", "urllib3", "asyncio", "matplotlib", "faust", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
