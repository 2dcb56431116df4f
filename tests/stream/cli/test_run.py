"""`streamscore run` / `produce`: clear one-line errors before touching any broker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.cli import main
from stream.dev.load import make_events


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "produce"])
def test_missing_pipeline_file_is_one_line(command, tmp_path):
    proc = cli(command, "--pipeline", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"streamscore: error: pipeline file not found: {tmp_path / 'nope.yaml'}"]


def test_run_rejects_zero_workers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--pipeline", "pipelines/fraud.yaml", "--workers", "0"])
    assert exc.value.code == 2 and "--workers: must be >= 1" in capsys.readouterr().err


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--workers" in out and "--exactly-once" in out and "--instance-id" in out
    assert "--max-inflight" in out


def test_max_inflight_must_be_positive(tmp_path):
    proc = cli("run", "--pipeline", "pipelines/fraud.yaml", "--max-inflight", "0")
    assert proc.returncode == 2 and "--max-inflight: must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("schema", ["fraud_transaction", "pricing_request"])
def test_generated_events_are_valid(schema, tmp_path):
    import json

    from schemas.registry import decode_batch

    events = make_events(schema, 200, seed=3, data_dir=tmp_path)  # no parquet: random
    for e in events:
        e["event_time"] = 1_795_000_000.0
    batch = decode_batch(schema, [json.dumps(e).encode() for e in events])
    assert len(batch.events) == 200 and not batch.rejected
    assert len({e["event_id"] for e in events}) == 200
