"""The shipped Feast repos: definitions, vocabularies, configuration and isolated copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

from features.exceptions import FeatureRepoError
from features.repo import (
    PIPELINES,
    feast_connection_string,
    feature_refs,
    feature_views,
    load_definitions,
    load_repo_info,
    load_vocab,
    open_store,
    prepare_repo,
    project_name,
    redis_url_from_repo,
    repo_data_dir,
    repo_path,
)
from features.request import request_spec


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_definitions(pipeline: str) -> None:
    defs = load_definitions(repo_path(pipeline))
    views = feature_views(repo_path(pipeline))
    names = [f.name for v in views for f in v.features]
    assert len(names) == len(set(names)), "feature names must be unique within a pipeline"
    dtypes = {f.dtype for v in views for f in v.features}
    # every scalar type the online reader must decode appears in each repo
    assert {Int64, Int32, Float64, Float32, String, Bool, UnixTimestamp} <= dtypes
    for view in views:
        assert view.ttl is not None and view.ttl.total_seconds() > 0
        assert Path(view.batch_source.path).parent == repo_data_dir(repo_path(pipeline))
    refs = feature_refs(pipeline)  # from repo.json, so it must agree with the definitions
    assert refs == list(defs.MODEL_FEATURE_REFS)
    by_ref = {f"{v.name}:{f.name}": f.dtype for v in views for f in v.features}
    assert set(refs) <= set(by_ref)
    assert all(by_ref[r] != UnixTimestamp for r in refs)
    assert {v.name for v in views} == {r.split(":")[0] for r in refs}
    assert {e.join_key for e in defs.ENTITIES} == (
        {"card_id", "merchant_id"} if pipeline == "fraud" else {"sku_id", "store_id"}
    )


def test_fraud_velocity_view_is_push_fed() -> None:
    from feast import PushSource

    views = {v.name: v for v in feature_views(repo_path("fraud"))}
    velocity = views["card_velocity"]
    assert isinstance(velocity.stream_source, PushSource)
    assert {f.name for f in velocity.features} == {
        "velocity_count_10m", "velocity_sum_10m", "velocity_count_1h", "velocity_sum_1h"
    }  # fmt: skip


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_repo_declares_its_request_features(pipeline: str) -> None:
    declared = load_repo_info(repo_path(pipeline))["request_features"]
    spec = request_spec(pipeline)
    assert declared["event_inputs"] == list(spec.event_inputs)
    assert declared["online_inputs"] == list(spec.online_inputs)
    assert declared["outputs"] == list(spec.outputs)
    assert declared["categorical"] == list(spec.categorical)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_vocab_covers_every_string_feature(pipeline: str) -> None:
    vocab = load_vocab(repo_path(pipeline))
    strings = {f.name for v in feature_views(repo_path(pipeline)) for f in v.features
               if f.dtype == String}  # fmt: skip
    assert strings | set(request_spec(pipeline).categorical) == set(vocab)
    for values in vocab.values():
        assert len(values) == len(set(values)) and all(values)
    if pipeline == "fraud":  # is_foreign compares codes across these three
        assert vocab["country"] == vocab["home_country"] == vocab["merchant_country"]


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STREAMSCORE_FEAST_REDIS", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@redis.example:6390/2")
    repo = repo_path("fraud")
    store = open_store(repo)
    assert store.config.online_store.connection_string == "redis.example:6390,db=2,password=s3cret"
    assert store.config.registry.path == str(tmp_path / "home/feast/fraud/registry.db")
    assert store.project == project_name(repo) == "streamscore_fraud"
    assert repo_data_dir(repo) == tmp_path / "home/data/fraud"
    assert redis_url_from_repo(repo) == "redis://:s3cret@redis.example:6390/2"
    monkeypatch.setenv("STREAMSCORE_FEAST_REDIS", "10.0.0.5:7000,ssl=true")
    assert open_store(repo).config.online_store.connection_string == "10.0.0.5:7000,ssl=true"
    assert redis_url_from_repo(repo) == "rediss://10.0.0.5:7000/0"


def test_connection_strings() -> None:
    assert feast_connection_string("redis://127.0.0.1:6379") == "127.0.0.1:6379"
    assert feast_connection_string("redis://h:1/3") == "h:1,db=3"
    assert (
        feast_connection_string("rediss://u:p%40ss@h:1")
        == "h:1,username=u,password=p@ss,ssl=true"
    )
    assert feast_connection_string("h:1,db=2") == "h:1,db=2"
    with pytest.raises(FeatureRepoError):
        feast_connection_string("http://h:1")


def test_prepare_repo_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMSCORE_FEAST_REDIS", raising=False)
    copy = prepare_repo("pricing", tmp_path, project="tprep1", redis_url="redis://h:7/1",
                        data_dir=tmp_path / "d")  # fmt: skip
    config = yaml.safe_load((copy / "feature_store.yaml").read_text())
    assert "${" not in (copy / "feature_store.yaml").read_text()
    assert config["project"] == "tprep1"
    assert config["online_store"]["connection_string"] == "h:7,db=1"
    assert config["registry"]["path"] == str(copy / "registry.db")
    assert json.loads((copy / "repo.json").read_text())["data_dir"] == str(tmp_path / "d")
    views = feature_views(copy)
    assert all(Path(v.batch_source.path).parent == tmp_path / "d" for v in views)
    assert load_vocab(copy) == load_vocab(repo_path("pricing"))
    # the shipped repo is untouched, and two copies load side by side
    other = prepare_repo("pricing", tmp_path / "o", data_dir=tmp_path / "e")
    assert Path(feature_views(other)[0].batch_source.path).parent == tmp_path / "e"
    assert Path(feature_views(copy)[0].batch_source.path).parent == tmp_path / "d"
    assert project_name(other) == "streamscore_pricing"
    with pytest.raises(FeatureRepoError):
        prepare_repo("pricing", tmp_path / "bad", project="_bad name")


def test_bad_repos(tmp_path: Path) -> None:
    with pytest.raises(FeatureRepoError, match="unknown pipeline"):
        repo_path("ads")
    with pytest.raises(FeatureRepoError, match="not a Feast feature repo"):
        load_vocab(tmp_path)
    copy = prepare_repo("fraud", tmp_path)
    (copy / "vocab.json").write_text('{"channel": [1, 2]}')
    with pytest.raises(FeatureRepoError, match="lists of strings"):
        load_vocab(copy)
    (copy / "fraud_features.py").write_text("raise RuntimeError('broken repo')\n")
    with pytest.raises(FeatureRepoError, match="broken repo"):
        load_definitions(copy)


def test_a_cluster_repo_is_recognised_from_its_own_settings(tmp_path: Path) -> None:
    from features.repo import is_cluster_repo

    shipped = Path(__file__).resolve().parents[2] / "features" / "repos" / "fraud"
    assert not is_cluster_repo(shipped)
    doc = yaml.safe_load((shipped / "feature_store.yaml").read_text())
    doc["online_store"] = {"type": "redis", "redis_type": "redis_cluster",
                           "connection_string": "127.0.0.1:7000,127.0.0.1:7001"}
    (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump(doc))
    assert is_cluster_repo(tmp_path)
