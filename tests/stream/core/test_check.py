"""``streamscore check``: a pipeline that can run is clean; each problem is one line."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import yaml

from features.repo import load_vocab, repo_path
from scorers.registry import Registry
from stream.cli.main import main
from stream.core.check import check_pipeline

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["amount_usd", "channel", "country", "hour_of_day", "avg_amount_30d",
         "velocity_count_1h"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = rng.random((400, len(NAMES)))
    booster = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1},
                        lgb.Dataset(X, (X[:, 0] > 0.5).astype(float), feature_name=NAMES), 3)
    reg = Registry(root)
    vocab = load_vocab(repo_path("fraud"))
    good = reg.register(booster, "fraud", {"vocab": {"channel": vocab["channel"]}})
    reg.promote("fraud", good.version, "champion")
    other = reg.register(booster, "fraud", {"vocab": {"channel": ["pos", "ecom"]}})
    reg.promote("fraud", other.version, "relabelled")
    return root


def _write(tmp_path: Path, **change) -> Path:
    doc = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
    doc["features"]["repo"] = str(repo_path("fraud"))
    for key, value in change.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_fraud_example_is_clean(tmp_path, registry):
    assert check_pipeline(_write(tmp_path), registry_root=str(registry)) == []


def test_each_problem_is_one_line(tmp_path, registry):
    path = _write(tmp_path, budget_ms=0,
                  features={"refs": ["card_history:avg_amount_30d", "card_history:shoe_size",
                                     "nope:x"]},
                  policy={"review_above": 0.9, "decline_above": 0.5,
                          "fallback": {"name": "fb", "field": "amount_eur", "above": 1}},
                  model={"ref": "fraud@relabelled"},
                  topics={"input": "a", "decisions": "a", "dead_letter": "c", "drift": "d"})
    got = check_pipeline(path, registry_root=str(registry))
    text = "\n".join(got)
    for part in ["budget_ms: must be > 0", "topics: input, decisions",
                 "review_above (0.9) <= decline_above (0.5)",
                 "'card_history:shoe_size': view card_history has no feature",
                 "'nope:x': the repo has no view 'nope'",
                 "policy.fallback.field: 'amount_eur'",
                 "needs features this pipeline cannot provide: velocity_count_1h",
                 "categorical 'channel' was trained with other levels"]:
        assert part in text, (part, got)
    assert all("\n" not in line for line in got)
    # An event the schema cannot give: one line (what depends on it is not guessed at).
    got = check_pipeline(_write(tmp_path, event={"key": "card_idd"}),
                         registry_root=str(registry))
    assert got == ["event: pipeline: event.key 'card_idd' is not a field of fraud_transaction "
                   "(event_id, card_id, merchant_id, amount, currency, country, channel, mcc, "
                   "event_time, schema_version)"]


def test_the_cli_prints_the_lines_and_exits_non_zero(tmp_path, registry, capsys):
    good = _write(tmp_path)
    assert main(["check", "--pipeline", str(good), "--registry", str(registry)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("review_above: 0.35", "review_above: 0.95"))
    assert main(["check", "--pipeline", str(bad), "--registry", str(registry)]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [
        "policy: need 0 <= review_above (0.95) <= decline_above (0.8) <= 1"]
    assert main(["check", "--pipeline", str(tmp_path / "none.yaml")]) == 1
    assert "pipeline file not found" in capsys.readouterr().out
