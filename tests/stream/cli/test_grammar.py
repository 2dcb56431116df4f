"""The one CLI grammar, checked on the whole command tree (plug-ins included)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from features.pipelines import find_pipeline, known_pipelines, pipeline_arg
from stream.cli import build_parser, main
from stream.cli.grammar import COMMAND, METAVARS, walk

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "pipelines" / "fraud.yaml"
# Every command that reads a pipeline file; bench's --pipeline picks a shipped workload.
TAKES_PIPELINE = {("demo",), ("faust",), ("run",), ("produce",), ("drift", "report"),
                  ("features", "generate"), ("features", "apply"), ("features", "materialize"),
                  ("model", "train"), ("model", "register"), ("model", "compare"),
                  ("outcomes",), ("check",)}
WORKLOAD_CHOICE = {("bench", "core"), ("bench", "e2e")}


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def _tree() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    return dict(walk(build_parser()))


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions --help shows, without -h and the global options."""
    return [a for a in parser._actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
            and a.dest not in ("log_level", "log_json", "debug", "version")]


def test_the_tree_includes_every_group_and_the_bench_plug_in() -> None:
    paths = set(_tree())
    assert {("dev", "up"), ("model", "promote"), ("drift", "report"), ("features", "generate"),
            ("bench", "e2e"), ("bench", "all")} <= paths
    assert paths >= TAKES_PIPELINE


def test_every_command_has_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for path in _tree():
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: {' '.join(('streamscore', *path))}"), path
        assert "global options" in out, path


def test_metavars_follow_the_convention() -> None:
    wrong = []
    for path, parser in _tree().items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                if action.metavar != COMMAND:
                    wrong.append((path, "subcommands", action.metavar))
                continue
            if action.nargs == 0 or action.help is argparse.SUPPRESS or action.choices:
                continue
            if action.metavar not in METAVARS:
                wrong.append((path, action.option_strings or action.dest, action.metavar))
    assert not wrong, wrong


def test_every_pipeline_option_takes_a_name_or_a_path() -> None:
    for path, parser in _tree().items():
        for action in parser._actions:
            if "--pipeline" not in action.option_strings:
                continue
            if path in WORKLOAD_CHOICE:
                assert set(action.choices or ()) >= {"fraud", "pricing"}, path
                continue
            assert path in TAKES_PIPELINE, path
            assert action.metavar == "PIPELINE" and action.type is pipeline_arg, path
            by_name, by_path = action.type("fraud"), action.type(str(FRAUD))
            assert by_name.resolve() == by_path.resolve() == FRAUD, path
    # Through the parser too: a name and a path give the same file.
    parser = build_parser()
    for argv in (["run"], ["produce"], ["drift", "report"], ["faust"], ["demo"],
                 ["features", "apply"], ["model", "train"]):
        for ref in ("pricing", str(ROOT / "pipelines" / "pricing.yaml")):
            args = parser.parse_args([*argv, "--pipeline", ref])
            assert Path(args.pipeline).resolve() == ROOT / "pipelines" / "pricing.yaml", argv


def test_demo_keeps_its_positional_as_a_hidden_alias() -> None:
    args = build_parser().parse_args(["demo", "pricing"])
    assert Path(args.legacy_pipeline).name == "pricing.yaml"
    assert Path(build_parser().parse_args(["demo"]).pipeline).name == "fraud.yaml"


def test_names_are_found_on_the_search_path(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "custom.yaml").write_text(FRAUD.read_text())
    monkeypatch.setenv("STREAMSCORE_PIPELINES", str(mine))
    assert find_pipeline("custom") == mine / "custom.yaml"
    assert {"custom", "fraud", "pricing"} <= set(known_pipelines())
    # ./pipelines of the current directory, before the checkout's.
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "fraud.yaml").write_text(FRAUD.read_text())
    monkeypatch.chdir(tmp_path)
    assert find_pipeline("fraud").resolve() == tmp_path / "pipelines" / "fraud.yaml"


def test_an_unknown_pipeline_is_one_line_listing_the_known_names() -> None:
    for argv in (["run", "--pipeline", "nosuch"], ["features", "apply", "--pipeline", "nosuch"],
                 ["model", "train", "--pipeline", "nosuch"], ["demo", "--pipeline", "nosuch"]):
        proc = cli(*argv)
        assert proc.returncode == 2, argv
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no pipeline named 'nosuch'" in lines[0], lines
        assert "known: fraud, pricing" in lines[0] and "Traceback" not in proc.stderr


def test_global_flags_work_before_and_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    before = parser.parse_args(["--log-level", "error", "--log-json", "dev", "status"])
    after = parser.parse_args(["dev", "status", "--log-level", "error", "--log-json"])
    deep = parser.parse_args(["model", "show", "x@1", "--log-json", "--debug"])
    neither = parser.parse_args(["dev", "status"])
    assert (before.log_level, before.log_json) == (after.log_level, after.log_json) == (
        "ERROR", True)
    assert deep.log_json is True and deep.debug is True and deep.log_level is None
    assert (neither.log_level, neither.log_json, neither.debug) == (None, None, False)
    # After the subcommand wins over before it.
    both = parser.parse_args(["--log-level", "error", "dev", "status", "--log-level", "debug"])
    assert both.log_level == "DEBUG"
    # And a real command sets the level from behind its subcommand.
    assert main(["model", "list", "--registry", str(tmp_path), "--log-level", "warning"]) == 0
    assert logging.getLogger().level == logging.WARNING
    assert "no models" in capsys.readouterr().out


def test_the_old_bootstrap_spelling_is_a_hidden_alias(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (["run", "--pipeline", "fraud"], ["produce", "--pipeline", "fraud"],
                 ["drift", "report", "--pipeline", "fraud"], ["faust", "--pipeline", "fraud"],
                 ["bench", "e2e"]):
        assert parser.parse_args([*argv, "--bootstrap", "h:1"]).bootstrap_servers == "h:1"
        assert parser.parse_args([*argv, "--bootstrap-servers", "h:2"]).bootstrap_servers == "h:2"
        assert parser.parse_args(argv).bootstrap_servers == ""
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert "--bootstrap-servers" in out and "--bootstrap " not in out, argv


def test_developer_flags_are_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--idle-exit" not in out and "--idle-backoff-ms" not in out
    args = build_parser().parse_args(["run", "--pipeline", "fraud", "--idle-exit", "2"])
    assert args.idle_exit == 2.0


def test_version_prints_the_package_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"streamscore {version('streamscore')}"


def test_exit_codes_are_documented() -> None:
    proc = cli("--help")
    assert proc.returncode == 0 and "exit codes:" in proc.stdout
    for code in ("0", "1", "2", "130"):
        assert f"\n  {code} " in proc.stdout
    assert "## Exit codes" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("argv", [
    ["--log-level", "bogus", "dev", "status"],
    ["dev", "status", "--log-level", "bogus"],
    ["dev", "up", "--broker", "bogus"],
    ["model", "train", "--split", "bogus"],
    ["run", "--pipeline", "fraud", "--workers", "0"],
    ["produce", "--pipeline", "fraud", "--bad-ratio", "2"],
    ["produce", "--pipeline", "fraud", "--rate", "-5"],
    ["run", "--pipeline", "fraud", "--metrics-port", "70000"],
    ["drift", "report", "--pipeline", "fraud", "--last", "0"],
    ["features", "generate", "--pipeline", "fraud", "--cards", "many"],
    ["bench", "e2e", "--size", "bogus"],
])
def test_a_bogus_value_is_one_line_exit_2(argv: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamscore"), lines
    assert "error:" in lines[0]


def test_a_bogus_choice_from_a_shell() -> None:
    proc = cli("dev", "status", "--log-level", "bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "invalid choice" in proc.stderr


def test_features_generate_takes_a_pipeline_file_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    import yaml

    from features.pipelines import pipeline_repo

    # A copy of the pricing pipeline elsewhere, its repo path relative to the copy's folder.
    doc = yaml.safe_load((ROOT / "pipelines" / "pricing.yaml").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    doc["features"]["repo"] = os.path.relpath(ROOT / "features" / "repos" / "pricing", elsewhere)
    copy = elsewhere / "shop.yaml"
    copy.write_text(yaml.safe_dump(doc))
    assert pipeline_repo(copy) == ROOT / "features" / "repos" / "pricing"
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["features", "generate", "--pipeline", str(copy), "--skus", "200",
                 "--stores", "10", "--rows", "500", "--no-progress"]) == 0
    assert "generated pricing data" in capsys.readouterr().out
    assert (tmp_path / "home" / "data" / "pricing" / "training.parquet").is_file()


@pytest.mark.parametrize("argv", [["features", "generate"], ["features", "apply"],
                                  ["model", "train"], ["run"], ["drift", "report"]])
def test_a_missing_pipeline_file_is_one_line_exit_2(argv: list[str], tmp_path: Path) -> None:
    proc = cli(*argv, "--pipeline", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"streamscore: error: pipeline file not found: {tmp_path / 'nope.yaml'}"]
