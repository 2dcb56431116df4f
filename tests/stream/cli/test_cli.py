"""The CLI frame: --help everywhere, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from stream.cli import build_parser, main


def all_command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.extend(all_command_paths(sub, (*prefix, name)))
    return paths


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = all_command_paths(build_parser())
    assert ("dev", "up") in paths and ("demo",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: streamscore"), path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_unknown_command_is_one_line_exit_2() -> None:
    result = cli("frobnicate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_option_value_is_one_line_exit_2() -> None:
    result = cli("demo", "fraud", "--events", "many")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--events" in result.stderr


def test_missing_subcommand_exit_2() -> None:
    result = cli("dev")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
