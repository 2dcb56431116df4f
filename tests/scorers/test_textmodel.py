"""Model text handling: rewritten tiny models (oracle-checked), corrupt and truncated files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scorers import ModelFormatError, compile_lightgbm
from tests.scorers.conftest import nasty_rows, train


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A tiny binary model with NaN-missing and categorical splits."""
    return train({"objective": "binary", "num_leaves": 6}, "binary", rounds=3).model_to_string()


def rewrite(text: str, key: str, fn: Any) -> str:
    """Apply ``fn(values) -> values`` to every ``key=`` line of every tree."""
    def sub(m: re.Match[str]) -> str:
        return f"{key}={' '.join(fn(m.group(1).split()))}"
    return re.sub(rf"^{key}=(.*)$", sub, text, flags=re.M)


def oracle(text: str, X: np.ndarray) -> None:
    # Edited lines change tree lengths: drop tree_sizes so LightGBM scans trees in order.
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)
    booster = lgb.Booster(model_str=text)
    model = compile_lightgbm(text)
    for raw in (False, True):
        np.testing.assert_allclose(model.predict(X, raw_score=raw),
                                   booster.predict(X, raw_score=raw), rtol=0, atol=1e-12)


def _numerical(values: list[str], new_bits: int) -> list[str]:
    return [v if int(v) & 1 else str((int(v) & ~0b1110) | new_bits) for v in values]


@pytest.mark.parametrize("bits", [0b0000, 0b0010, 0b0100, 0b0110, 0b1000, 0b1010],
                         ids=["none", "none_left", "zero", "zero_left", "nan", "nan_left"])
def test_every_missing_type_and_default_side(tiny_text: str, bits: int) -> None:
    text = rewrite(tiny_text, "decision_type", lambda vs: _numerical(vs, bits))
    oracle(text, nasty_rows(400, seed=bits))


@pytest.mark.parametrize("objective", [
    "binary sigmoid:2.5", "regression", "regression sqrt", "poisson", "gamma", "tweedie",
    "cross_entropy", "cross_entropy_lambda", "huber", "fair", "quantile", "mape",
    "regression_l1", "lambdarank", "rank_xendcg",
])
def test_rewritten_objective_lines(tiny_text: str, objective: str) -> None:
    oracle(re.sub(r"^objective=.*$", f"objective={objective}", tiny_text, flags=re.M),
           nasty_rows(100))


def test_custom_objective_has_no_line_and_predicts_raw(tiny_text: str) -> None:
    text = re.sub(r"^objective=.*\n", "", tiny_text, flags=re.M)
    oracle(text, nasty_rows(50))
    assert compile_lightgbm(text).objective == "custom"


def test_single_leaf_trees() -> None:
    booster = train({"objective": "regression", "min_data_in_leaf": 10_000}, rounds=3)
    model = compile_lightgbm(booster)
    assert all(t.num_leaves == 1 for t in model.ir.trees)
    X = nasty_rows(20)
    np.testing.assert_allclose(model.predict(X), booster.predict(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.contributions(X), booster.predict(X, pred_contrib=True),
                               rtol=0, atol=1e-9)


def test_attributes_and_sha256(tiny_text: str, tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "model.txt"
    path.write_text(tiny_text)
    model = compile_lightgbm(path)
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert compile_lightgbm(str(path)).sha256 == model.sha256
    assert compile_lightgbm(tiny_text).sha256 == model.sha256
    assert model.feature_names == [f"Column_{i}" for i in range(6)]
    assert (model.num_features, model.num_class, model.num_trees) == (6, 1, 3)
    assert model.objective.startswith("binary")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t[: t.index("end of trees")], "truncated"),
    (lambda t: t[: len(t) // 2], "truncated|values, expected"),
    (lambda t: t.replace("tree\n", "forest\n", 1), "not a LightGBM"),
    (lambda t: t.replace("version=v4", "version=v9"), "version"),
    (lambda t: re.sub(r"^threshold=(\S+)", r"threshold=abc", t, count=1, flags=re.M),
     "not a list of numbers"),
    (lambda t: re.sub(r"^split_feature=(\d+)", "split_feature=99", t, count=1, flags=re.M),
     "split_feature outside"),
    (lambda t: re.sub(r"^left_child=(\S+)", "left_child=0", t, count=1, flags=re.M),
     "cycle|twice|unreachable"),
    (lambda t: re.sub(r"^right_child=(\S+)", "right_child=-99", t, count=1, flags=re.M),
     "outside the tree"),
    (lambda t: re.sub(r"^objective=.*$", "objective=ranking_magic", t, flags=re.M),
     "unsupported objective"),
    (lambda t: re.sub(r"^num_leaves=\d+", "num_leaves=zero", t, count=1, flags=re.M),
     "not an integer"),
    (lambda t: re.sub(r"^feature_names=.*$", "feature_names=a b", t, flags=re.M),
     "feature_names"),
    (lambda t: re.sub(r"^threshold=(\S+)", "threshold=nan", t, count=1, flags=re.M), "NaN"),
])
def test_corrupt_models_raise_model_format_error(tiny_text: str, mutate: Any,
                                                 message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        compile_lightgbm(mutate(tiny_text))


def test_categorical_bitset_index_out_of_range(tiny_text: str) -> None:
    text = rewrite(tiny_text, "decision_type", lambda vs: ["1", *vs[1:]])
    text = rewrite(text, "threshold", lambda vs: ["7", *vs[1:]])
    with pytest.raises(ModelFormatError, match=r"categorical|bitset"):
        compile_lightgbm(text)


def test_missing_file_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not found"):
        compile_lightgbm(tmp_path / "nope.txt")
    with pytest.raises(TypeError):
        compile_lightgbm(3.5)
    assert issubclass(ModelFormatError, ValueError)


def test_bad_inputs_raise_value_error(tiny_text: str) -> None:
    model = compile_lightgbm(tiny_text)
    with pytest.raises(ValueError, match="5 columns but the model has 6"):
        model.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="2-D"):
        model.predict(np.zeros(6))
    with pytest.raises(ValueError, match="numeric"):
        model.predict(np.array([["a"] * 6]))
    with pytest.raises(ValueError, match="numeric"):
        model.predict(np.zeros((1, 6), dtype=object))


def test_table_cache_reuses_and_survives_corruption(tiny_text: str, tmp_path: Path) -> None:
    X = nasty_rows(64)
    first = compile_lightgbm(tiny_text, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and first.sha256[:32] in files[0].name
    second = compile_lightgbm(tiny_text, cache_dir=tmp_path)
    np.testing.assert_array_equal(second.predict(X), first.predict(X))
    files[0].write_bytes(b"garbage")
    third = compile_lightgbm(tiny_text, cache_dir=tmp_path)
    np.testing.assert_array_equal(third.predict(X), first.predict(X))
    np.testing.assert_array_equal(compile_lightgbm(tiny_text, cache_dir=False).predict(X),
                                  first.predict(X))


@pytest.mark.parametrize("params", [
    ({"objective": "multiclass", "num_class": 3}, "multiclass"),
    ({"objective": "regression", "boosting": "rf", "bagging_fraction": 0.5,
      "bagging_freq": 1}, "regression"),
], ids=["multiclass", "rf"])
def test_cached_tables_skip_the_parse_and_keep_every_header_fact(
        params: tuple[dict[str, Any], str], tmp_path: Path) -> None:
    booster = train(params[0], params[1], rounds=4)
    text = booster.model_to_string()
    X = nasty_rows(40)
    first = compile_lightgbm(text, cache_dir=tmp_path)
    second = compile_lightgbm(text, cache_dir=tmp_path)
    assert second._ir is None  # scored from the cache without parsing the trees
    for attr in ("feature_names", "num_features", "num_class", "num_trees", "objective",
                 "pandas_categorical", "kernel", "_k", "_divide", "_code", "_param"):
        assert getattr(second, attr) == getattr(first, attr), attr
    for raw in (False, True):
        np.testing.assert_array_equal(second.predict(X, raw_score=raw),
                                      booster.predict(X, raw_score=raw))
    # TreeSHAP's tables come from the cache too; what needs the trees parses them.
    np.testing.assert_allclose(second.contributions(X), booster.predict(X, pred_contrib=True),
                               rtol=0, atol=1e-9)
    assert second._ir is None
    np.testing.assert_array_equal(second.contributions(X, method="saabas"),
                                  first.contributions(X, method="saabas"))
    assert second._ir is not None and len(second.ir.trees) == second.num_trees
