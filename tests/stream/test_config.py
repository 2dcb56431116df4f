"""Pipeline config: loading, ${VAR} expansion, and clear errors naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from stream.config import BandsPolicy, SweepPolicy, load_pipeline

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
name: p
schema: fraud_transaction
kafka:
  bootstrap_servers: {bootstrap}
  settings:
    sasl.password: {password}
topics: {{input: in, decisions: out, dead_letter: dlq, drift: drift}}
features: {{repo: features/repos/fraud}}
model: {{ref: fraud@champion}}
event: {{key: card_id}}
policy: {{kind: bands}}
metrics:
  port: {port}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(text)
    return path


def minimal(**kw: str) -> str:
    values = {"bootstrap": "localhost:9092", "password": "x", "port": "9000"} | kw
    return MINIMAL.format(**values)


@pytest.mark.parametrize("name", ["fraud", "pricing"])
def test_shipped_pipelines_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    cfg = load_pipeline(ROOT / "pipelines" / f"{name}.yaml")
    assert cfg.name == name
    assert isinstance(cfg.policy, BandsPolicy if name == "fraud" else SweepPolicy)
    assert cfg.kafka.bootstrap_servers == ""  # ${KAFKA_BOOTSTRAP_SERVERS:-} default
    assert cfg.resolve_path(cfg.features.repo) == ROOT / "features" / "repos" / name


def test_env_expansion_and_typing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SS_BOOT", "broker:9093")
    monkeypatch.setenv("SS_PW", "hunter2")
    monkeypatch.setenv("SS_PORT", "9555")
    cfg = load_pipeline(write(tmp_path, minimal(bootstrap="${SS_BOOT}", password="${SS_PW}",
                                                port="${SS_PORT}")))
    assert cfg.kafka.bootstrap_servers == "broker:9093"
    assert cfg.kafka.settings["sasl.password"] == "hunter2"
    assert cfg.metrics.port == 9555
    # Secrets never reach logs through the redacted view.
    assert cfg.redacted()["kafka"]["settings"]["sasl.password"] == "***"
    assert "hunter2" not in repr(cfg.redacted())


def test_default_value_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SS_UNSET", raising=False)
    cfg = load_pipeline(write(tmp_path, minimal(bootstrap="${SS_UNSET:-fallback:1}")))
    assert cfg.kafka.bootstrap_servers == "fallback:1"


def test_missing_env_var_names_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SS_MISSING_PW", raising=False)
    path = write(tmp_path, minimal(password="${SS_MISSING_PW}"))
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    text = str(err.value)
    assert "SS_MISSING_PW" in text and "kafka.settings.sasl.password" in text and str(path) in text


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() + "\nbudget_msec: 50\n")
    with pytest.raises(ConfigError, match=r"unknown key 'budget_msec'"):
        load_pipeline(path)


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("topics: {", "topics: {inptu: x, "))
    with pytest.raises(ConfigError, match=r"unknown key 'topics.inptu'"):
        load_pipeline(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(port="not-a-port"))
    with pytest.raises(ConfigError, match=r"key 'metrics.port'.*int"):
        load_pipeline(path)


def test_unknown_policy_kind(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("kind: bands", "kind: lottery"))
    with pytest.raises(ConfigError, match="policy"):
        load_pipeline(path)


def test_missing_required_section(tmp_path: Path) -> None:
    text = "\n".join(line for line in minimal().splitlines() if not line.startswith("model:"))
    with pytest.raises(ConfigError, match="model"):
        load_pipeline(write(tmp_path, text))


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_pipeline(write(tmp_path, minimal()))
    with pytest.raises(AttributeError):
        cfg.budget_ms = 5  # type: ignore[misc]


@pytest.mark.parametrize("secret", ["0777", "on", "1e3", "true", "null", "[a]"])
def test_a_variable_is_text_never_retyped_by_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  secret: str) -> None:
    monkeypatch.setenv("SS_PW", secret)
    cfg = load_pipeline(write(tmp_path, minimal(password="${SS_PW}")))
    assert cfg.kafka.settings["sasl.password"] == secret


def test_a_typed_key_refuses_text_that_is_not_its_type(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SS_PORT", "nine")
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        load_pipeline(write(tmp_path, minimal(port="${SS_PORT}")))


def test_secrets_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SS_PW", "hunter2")
    text = minimal(password="${SS_PW}") + "  host: 0.0.0.0\n"
    text = text.replace("features: {repo: features/repos/fraud}",
                        "features: {repo: features/repos/fraud, "
                        "redis_url: 'rediss://worker:s3cr3t@redis:6380/0'}")
    cfg = load_pipeline(write(tmp_path, text))
    assert cfg.features.redis_url == "rediss://worker:s3cr3t@redis:6380/0"
    for shown in (repr(cfg), str(cfg), repr(cfg.kafka), repr(cfg.features),
                  repr(cfg.redacted())):
        assert "hunter2" not in shown and "s3cr3t" not in shown
    assert "rediss://worker:***@redis:6380/0" in repr(cfg.features)


def test_relative_paths_resolve_against_the_files_own_folder(tmp_path: Path) -> None:
    # A copy of a shipped pipeline elsewhere, with the repo path rewritten for its place.
    text = (ROOT / "pipelines" / "fraud.yaml").read_text()
    elsewhere = tmp_path / "conf" / "deep"
    elsewhere.mkdir(parents=True)
    (elsewhere / "fraud.yaml").write_text(text.replace("../features/repos/fraud", "repo"))
    cfg = load_pipeline(elsewhere / "fraud.yaml")
    assert cfg.resolve_path(cfg.features.repo) == elsewhere / "repo"
    assert cfg.resolve_path("/abs/x") == Path("/abs/x")
