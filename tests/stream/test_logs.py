"""Logging is set by flags or by STREAMSCORE_LOG_JSON / STREAMSCORE_LOG_LEVEL; flags win."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from stream.cli import main
from stream.logs import JsonFormatter, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _formatter() -> logging.Formatter | None:
    return logging.getLogger().handlers[0].formatter


def test_environment_sets_json_and_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_LOG_JSON", "true")
    monkeypatch.setenv("STREAMSCORE_LOG_LEVEL", "debug")
    setup_logging()
    assert isinstance(_formatter(), JsonFormatter)
    assert logging.getLogger().level == logging.DEBUG


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_LOG_JSON", "1")
    monkeypatch.setenv("STREAMSCORE_LOG_LEVEL", "DEBUG")
    setup_logging("WARNING", json_lines=False)
    assert not isinstance(_formatter(), JsonFormatter)
    assert logging.getLogger().level == logging.WARNING


def test_unset_means_text_at_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMSCORE_LOG_JSON", raising=False)
    monkeypatch.delenv("STREAMSCORE_LOG_LEVEL", raising=False)
    setup_logging()
    assert not isinstance(_formatter(), JsonFormatter)
    assert logging.getLogger().level == logging.INFO


@pytest.mark.parametrize(("env", "argv"), [
    ({}, ["--log-level", "bogus"]),
    ({"STREAMSCORE_LOG_LEVEL": "loud"}, []),
    ({"STREAMSCORE_LOG_JSON": "maybe"}, []),
])
def test_bad_values_are_one_line(env: dict[str, str], argv: list[str],
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:  # a bad flag value stops the parser (SystemExit), a bad variable the command
        code = main([*argv, "drift", "report", "--pipeline", "missing.yaml"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("streamscore")
    assert ": error: " in err
    assert "log" in err.lower()
