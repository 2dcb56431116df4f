"""The model registry: versions, references, aliases, integrity and refusals, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from scorers.refstats import reference_stats
from scorers.registry import (
    IntegrityError,
    ModelNotFoundError,
    Registry,
    RegistryError,
    default_root,
    model_text_info,
    parse_ref,
)


def _train(seed: int, cat: bool = True) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    n = 400
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n), rng.random(n)])
    y = (X[:, 0] + (X[:, 1] == 3) + rng.normal(0, 0.5, n) > 0.5).astype(float)
    ds = lgb.Dataset(
        X, y, feature_name=["amount", "mcc", "ratio"],
        categorical_feature=["mcc"] if cat else "auto",
    )
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "seed": seed,
              "num_threads": 1, "min_data_in_leaf": 5}
    return lgb.train(params, ds, num_boost_round=5 + seed)


@pytest.fixture(scope="module")
def boosters() -> list[lgb.Booster]:
    return [_train(1), _train(2)]


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_register_writes_text_and_metadata(reg: Registry, boosters: list[lgb.Booster]) -> None:
    text = boosters[0].model_to_string()
    mv = reg.register(text, "fraud", {"metrics": {"auc": 0.9}, "description": "x"})
    assert (mv.name, mv.version, mv.ref) == ("fraud", 1, "fraud@1")
    data = (mv.path / "model.txt").read_bytes()
    assert data.decode() == text
    meta = json.loads((mv.path / "metadata.json").read_text())
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() == mv.sha256
    assert meta["name"] == "fraud" and meta["version"] == 1
    assert meta["feature_names"] == ["amount", "mcc", "ratio"]
    assert meta["categorical_features"] == ["mcc"]
    assert meta["objective"] == "binary" and meta["num_class"] == 1
    assert meta["num_trees"] == boosters[0].num_trees()
    assert meta["metrics"] == {"auc": 0.9} and meta["description"] == "x"
    assert meta["created_at"].endswith("Z") and "T" in meta["created_at"]
    assert meta["format"] == "lightgbm-text"


def test_caller_cannot_override_registry_facts(reg: Registry, boosters: list[lgb.Booster]) -> None:
    mv = reg.register(boosters[0], "m", {"sha256": "0" * 64, "version": 99, "num_trees": 1})
    assert mv.version == 1
    assert mv.metadata["num_trees"] == boosters[0].num_trees()
    assert mv.sha256 != "0" * 64


def test_versions_and_references(reg: Registry, boosters: list[lgb.Booster]) -> None:
    v1 = reg.register(boosters[0], "fraud")
    v2 = reg.register(boosters[1].model_to_string(), "fraud")
    assert reg.versions("fraud") == [1, 2] and reg.names() == ["fraud"]
    assert reg.resolve("fraud@1").sha256 == v1.sha256
    assert reg.resolve("fraud@latest").version == 2
    assert reg.resolve("fraud").version == 2  # no champion yet: the latest
    reg.promote("fraud", 1, "champion")
    assert reg.resolve("fraud").version == 1  # bare name = champion once set
    assert reg.resolve("fraud@champion").version == 1
    reg.promote("fraud", 2, "challenger")
    assert reg.aliases("fraud") == {"champion": 1, "challenger": 2}
    assert reg.load_text("fraud@challenger") == boosters[1].model_to_string()
    assert reg.load_text("fraud@2", expected_sha256=v2.sha256.upper())
    with pytest.raises(IntegrityError, match="expected"):
        reg.load_text("fraud@2", expected_sha256=v1.sha256)
    assert [m.ref for m in reg.list()] == ["fraud@1", "fraud@2"]
    assert [m.ref for m in reg.list("fraud")] == ["fraud@1", "fraud@2"]


def test_register_from_path_and_with_aliases(
    reg: Registry, boosters: list[lgb.Booster], tmp_path: Path
) -> None:
    path = tmp_path / "model.txt"
    boosters[0].save_model(str(path))
    mv = reg.register(path, "pricing", aliases=["champion", "canary"])
    assert mv.metadata["source"] == str(path.resolve())
    assert reg.aliases("pricing") == {"canary": 1, "champion": 1}
    mv2 = reg.register(str(path), "pricing", aliases="challenger")
    assert reg.aliases("pricing")["challenger"] == mv2.version == 2


def test_sha256_mismatch_refuses_to_load(reg: Registry, boosters: list[lgb.Booster]) -> None:
    mv = reg.register(boosters[0], "fraud")
    reg.register(boosters[1], "fraud")
    p = mv.model_path
    p.write_text(p.read_text().replace("shrinkage=", "shrinkage= ", 1))
    with pytest.raises(IntegrityError, match=r"refusing to load fraud@1: sha256"):
        reg.load_text("fraud@1")
    with pytest.raises(IntegrityError):
        reg.promote("fraud", 1, "champion")
    assert reg.aliases("fraud") == {}
    assert reg.load_text("fraud@2")  # the other version is unaffected


def test_missing_version_alias_and_name(reg: Registry, boosters: list[lgb.Booster]) -> None:
    reg.register(boosters[0], "fraud")
    with pytest.raises(ModelNotFoundError, match=r"no version 7 \(versions: 1\)"):
        reg.resolve("fraud@7")
    with pytest.raises(ModelNotFoundError, match=r"no alias 'champion' \(aliases: none\)"):
        reg.resolve("fraud@champion")
    with pytest.raises(ModelNotFoundError, match=r"no model named 'pricing'.*models: fraud"):
        reg.resolve("pricing")
    with pytest.raises(ModelNotFoundError, match="no model named"):
        reg.resolve("pricing@latest")
    with pytest.raises(ModelNotFoundError, match="no model named"):
        reg.list("pricing")
    with pytest.raises(ModelNotFoundError, match="no version 3"):
        reg.promote("fraud", 3, "champion")
    with pytest.raises(ModelNotFoundError, match="no alias"):
        reg.remove_alias("fraud", "champion")


def test_bad_references_names_and_aliases(reg: Registry, boosters: list[lgb.Booster]) -> None:
    assert parse_ref("fraud") == ("fraud", None)
    assert parse_ref(" fraud@champion ") == ("fraud", "champion")
    for bad in ("", "@1", "fr aud", "../x", "fraud@"):
        with pytest.raises(RegistryError, match="invalid model reference"):
            parse_ref(bad)
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register(boosters[0], "../evil")
    reg.register(boosters[0], "m")
    for alias in ("latest", "3", "bad alias", ""):
        with pytest.raises(RegistryError, match="invalid alias"):
            reg.promote("m", 1, alias)


def test_corrupt_metadata_and_aliases(reg: Registry, boosters: list[lgb.Booster]) -> None:
    mv = reg.register(boosters[0], "fraud")
    meta = mv.path / "metadata.json"
    meta.write_text('{"sha256": ')
    with pytest.raises(RegistryError, match=r"corrupt metadata of fraud@1"):
        reg.resolve("fraud@1")
    meta.write_text(json.dumps({"name": "fraud"}))
    with pytest.raises(RegistryError, match="no valid 'sha256'"):
        reg.resolve("fraud")
    meta.unlink()
    with pytest.raises(RegistryError, match=r"no .*metadata\.json"):
        reg.resolve("fraud@1")
    (reg.root / "fraud" / "aliases.json").write_text('{"champion": "one"}')
    with pytest.raises(RegistryError, match="corrupt alias file"):
        reg.resolve("fraud")


def test_refuses_pickles_and_non_models(
    reg: Registry, boosters: list[lgb.Booster], tmp_path: Path
) -> None:
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps(boosters[0]))
    with pytest.raises(RegistryError, match="pickle"):
        reg.register(pkl, "fraud")
    proto0 = tmp_path / "p0.pkl"
    proto0.write_bytes(pickle.dumps({"a": 1}, protocol=0))
    with pytest.raises(RegistryError, match="not a LightGBM text model"):
        reg.register(proto0, "fraud")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(RegistryError, match="not UTF-8"):
        reg.register(binary, "fraud")
    text = boosters[0].model_to_string()
    truncated = text[: len(text) // 2]
    with pytest.raises(RegistryError, match="truncated"):
        reg.register(truncated, "fraud")
    with pytest.raises(RegistryError, match="cannot read model file"):
        reg.register(tmp_path / "nope.txt", "fraud")
    with pytest.raises(RegistryError, match="not bytes"):
        reg.register(text.encode(), "fraud")
    with pytest.raises(RegistryError, match="cannot register a dict"):
        reg.register({"tree": 1}, "fraud")
    assert reg.names() == []  # nothing half-registered


def test_reference_statistics_are_validated(reg: Registry, boosters: list[lgb.Booster]) -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=50), rng.integers(0, 5, 50), rng.random(50)])
    ref = reference_stats(X, ["amount", "mcc", "ratio"], rng.random(50), categorical=["mcc"])
    mv = reg.register(boosters[0], "fraud", {"reference": ref})
    assert mv.reference == ref
    wrong = reference_stats(X[:, :2], ["amount", "mcc"], rng.random(50))
    with pytest.raises(RegistryError, match=r"bad reference statistics.*ratio"):
        reg.register(boosters[0], "fraud", {"reference": wrong})


def test_model_text_info_reads_the_header(boosters: list[lgb.Booster]) -> None:
    info = model_text_info(_train(3, cat=False).model_to_string())
    assert info["categorical_features"] == [] and info["num_trees"] == 8
    text = boosters[0].model_to_string()
    # No objective line is how LightGBM writes a custom-objective model.
    custom = "\n".join(ln for ln in text.split("\n") if not ln.startswith("objective="))
    assert model_text_info(custom)["objective"] == "custom"
    broken = text.replace("max_feature_idx=2", "max_feature_idx=5", 1)
    with pytest.raises(RegistryError, match="3 feature names"):
        model_text_info(broken)


def test_alias_file_is_replaced_atomically_and_watchable(
    reg: Registry, boosters: list[lgb.Booster]
) -> None:
    reg.register(boosters[0], "fraud", aliases=["champion"])
    reg.register(boosters[1], "fraud")
    watcher = reg.watch("fraud@champion")
    assert watcher.current.version == 1 and watcher.poll() is None
    fp = reg.fingerprint("fraud")
    ino = os.stat(reg.root / "fraud" / "aliases.json").st_ino
    reg.promote("fraud", 1, "challenger")  # champion unchanged
    assert reg.fingerprint("fraud") != fp
    assert os.stat(reg.root / "fraud" / "aliases.json").st_ino != ino  # new file, not rewritten
    assert watcher.poll() is None
    reg.promote("fraud", 2, "champion")
    moved = watcher.poll()
    assert moved is not None and moved.version == 2 and watcher.current.version == 2
    assert watcher.poll() is None
    latest = reg.watch("fraud@latest")
    fp = reg.fingerprint("fraud")
    reg.register(boosters[0], "fraud")
    assert reg.fingerprint("fraud") != fp
    polled = latest.poll()
    assert polled is not None and polled.version == 3
    assert not [p for p in (reg.root / "fraud").iterdir() if p.name.startswith(".staging")]
    assert not [p for p in (reg.root / "fraud").iterdir() if p.name.startswith(".aliases")]
    reg.remove_alias("fraud", "challenger")
    assert reg.aliases("fraud") == {"champion": 2}


def test_concurrent_registrations_get_distinct_versions(
    reg: Registry, boosters: list[lgb.Booster]
) -> None:
    text = boosters[0].model_to_string()
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(reg.register(text, "fraud").version)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(1, 9))
    for v in range(1, 9):
        assert reg.get("fraud", v).metadata["version"] == v


def test_default_root_follows_streamscore_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / "models"
    assert Registry().root == tmp_path / "home" / "models"
    monkeypatch.delenv("STREAMSCORE_HOME")
    assert default_root() == Path(".streamscore") / "models"


def test_watcher_keeps_current_version_when_the_new_target_is_broken(
    reg: Registry, boosters: list[lgb.Booster]
) -> None:
    reg.register(boosters[0], "fraud", aliases=["champion"])
    bad = reg.register(boosters[1], "fraud")
    watcher = reg.watch("fraud")
    bad.model_path.write_text(bad.model_path.read_text() + "tampered\n")
    # promote() refuses a tampered file, so move the alias by hand.
    (reg.root / "fraud" / "aliases.json").write_text('{"champion": 2}')
    assert watcher.poll() is None
    assert watcher.current.version == 1
    assert isinstance(watcher.last_error, IntegrityError)
    (reg.root / "fraud" / "aliases.json").write_text('{"champion": 7}')
    assert watcher.poll() is None and isinstance(watcher.last_error, ModelNotFoundError)
    reg.register(boosters[0], "fraud", aliases=["champion"])  # version 3, healthy
    moved = watcher.poll()
    assert moved is not None and moved.version == 3 and watcher.last_error is None


def test_load_model_compiles_the_verified_text(reg: Registry, boosters: list[lgb.Booster]) -> None:
    scorers = pytest.importorskip("scorers")
    if not hasattr(scorers, "compile_lightgbm"):
        pytest.skip("scorers.compile_lightgbm not available yet")
    mv0 = reg.register(boosters[0], "fraud", aliases=["champion"])
    mv, model = reg.load_model("fraud@champion", expected_sha256=mv0.sha256)
    assert mv.version == 1 and model.sha256 == mv.sha256
    X = np.random.default_rng(0).random((50, 3)) * [2, 5, 1]
    np.testing.assert_allclose(model.predict(X), boosters[0].predict(X), rtol=0, atol=1e-12)
    with pytest.raises(IntegrityError, match="expected"):
        reg.load_model("fraud", expected_sha256="ab" * 32)
    mv.model_path.write_text(mv.model_path.read_text().replace("Tree=0", "Tree=0 ", 1))
    with pytest.raises(IntegrityError, match="refusing to load"):
        reg.load_model("fraud")
