"""``streamscore model ...``: in-process through stream.cli.main, and exit codes via subprocess."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scorers.registry import Registry
from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 1500
    df = pd.DataFrame({
        "amount": rng.lognormal(3, 1, n),
        "channel": rng.choice(["web", "pos", "app"], n),
        "hour": rng.integers(0, 24, n),
    })
    df["label"] = (rng.random(n) < 0.05 + 0.2 * (df["channel"] == "web")).astype(int)
    path = tmp_path / "training.parquet"
    df.to_parquet(path)
    (tmp_path / "training.json").write_text(json.dumps({
        "label": "label", "features": ["amount", "channel", "hour"],
        "categorical": ["channel"], "objective": "binary",
    }))
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *argv], capture_output=True, text=True,
        cwd=ROOT, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )


def test_train_list_show_promote_verify(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = str(tmp_path / "models")
    common = ["--registry", reg]
    assert main(["model", "train", "--data", str(data), "--name", "card", "--trees", "20",
                 "--no-progress", "--threads", "1", "--promote", "champion", *common]) == 0
    out = capsys.readouterr().out
    assert "registered card@1" in out and "as champion" in out and "auc=" in out
    assert main(["model", "train", "--data", str(data), "--name", "card", "--trees", "15",
                 "--leaves", "7", "--no-progress", "--threads", "1",
                 "--param", "lambda_l1=0.5", "--param", "boost_from_average=false",
                 *common]) == 0
    capsys.readouterr()

    assert main(["model", "list", *common]) == 0
    table = capsys.readouterr().out
    assert "card" in table and "champion" in table and "auc" in table
    versions = Registry(reg).list("card")
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].sha256[:12] in table

    assert main(["model", "show", "card", "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["aliases"] == ["champion"]
    assert shown["reference"]["features"]["channel"]["kind"] == "categorical"
    assert shown["params"]["num_leaves"] == 31

    assert main(["model", "show", "card@2", *common]) == 0
    pretty = capsys.readouterr().out
    assert "card@2" in pretty and "numeric, " in pretty and "'num_leaves': 7" in pretty
    assert "'lambda_l1': 0.5" in pretty and "'boost_from_average': False" in pretty

    assert main(["model", "promote", "card@2", "--alias", "champion", *common]) == 0
    assert "card@champion -> version 2" in capsys.readouterr().out
    assert Registry(reg).resolve("card").version == 2
    # Any reference names the version (an alias, latest); the older 'NAME VERSION' works.
    assert main(["model", "promote", "card@champion", "--alias", "challenger", *common]) == 0
    assert "card@challenger -> version 2" in capsys.readouterr().out
    assert main(["model", "promote", "card", "1", "--alias", "challenger", *common]) == 0
    assert Registry(reg).resolve("card@challenger").version == 1
    assert main(["model", "promote", "card", *common]) == 1
    assert "say which version to promote" in capsys.readouterr().err

    assert main(["model", "verify", "card@1", *common]) == 0
    assert "card@1 ok" in capsys.readouterr().out

    # warm: the table cache is filled, and a later compile scores from it unparsed.
    tables = tmp_path / "tables"
    assert main(["model", "warm", "card@1", "card@champion", "--cache-dir", str(tables),
                 *common]) == 0
    out = capsys.readouterr().out
    assert out.count("kernels and tables ready") == 2 and str(tables) in out
    assert len(list(tables.glob("*.npz"))) == 2
    from scorers import compile_lightgbm

    mv = Registry(tmp_path / "models").resolve("card@1")
    assert compile_lightgbm(mv.read_text(), cache_dir=tables)._ir is None


def test_register_a_model_file(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import lightgbm as lgb

    df = pd.read_parquet(data)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(df[["amount", "hour"]], df["label"]), num_boost_round=3)
    model = tmp_path / "external.txt"
    booster.save_model(str(model))
    reg = str(tmp_path / "models")
    assert main(["model", "register", str(model), "--name", "ext", "--alias", "challenger",
                 "--description", "from a notebook", "--registry", reg]) == 0
    out = capsys.readouterr().out
    assert "registered ext@1" in out and "no reference statistics" in out
    mv = Registry(reg).resolve("ext@challenger")
    assert mv.metadata["description"] == "from a notebook"
    assert mv.read_text() == model.read_text()
    assert main(["model", "register", str(model), "--name", "ext", "--data", str(data),
                 "--label", "label", "--registry", reg]) == 0
    out = capsys.readouterr().out
    assert "registered ext@2" in out and "reference from 1500 rows; auc" in out
    mv2 = Registry(reg).resolve("ext@latest")
    assert mv2.reference is not None and mv2.reference["n"] == 1500
    assert list(mv2.reference["features"]) == ["amount", "hour"]


def test_errors_are_one_line_with_nonzero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "models"
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    cases = [
        (["model", "show", "nosuch@1"], "no model named 'nosuch'"),
        (["model", "register", str(pkl), "--name", "x"], "pickle"),
        (["model", "train"], "needs --pipeline"),
        (["model", "promote", "x@1", "--alias", "latest"], "invalid alias"),
        (["model", "train", "--data", str(pkl)], "cannot read training data"),
    ]
    for argv, message in cases:
        assert main([*argv, "--registry", str(reg)]) == 1, argv
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert lines == [lines[0]] and lines[0].startswith("streamscore: error: "), lines
        assert message in lines[0] and "Traceback" not in err

    # The same in a separate process, as a shell sees it: a model whose file
    # was altered after registration is refused with exit 1 and one line.
    Registry(reg).register(_tiny_model(), "m")
    model_file = reg / "m" / "1" / "model.txt"
    model_file.write_text(model_file.read_text() + "\n")
    proc = _run("model", "verify", "m", "--registry", str(reg))
    assert proc.returncode == 1 and "refusing to load m@1: sha256" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

    # argparse errors: exit 2, one line; --help works for every subcommand.
    with pytest.raises(SystemExit) as exc:
        main(["model", "promote", "m", "one"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    for cmd in ("train", "register", "list", "show", "promote", "verify"):
        assert _help_ok(cmd)


def _tiny_model() -> str:
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    X = rng.random((100, 2))
    return lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1},
                     lgb.Dataset(X, X[:, 0]), num_boost_round=2).model_to_string()


def _help_ok(cmd: str) -> bool:
    with pytest.raises(SystemExit) as exc:
        main(["model", cmd, "--help"])
    return exc.value.code == 0
