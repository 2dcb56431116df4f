"""Pipeline configuration: one YAML file -> one frozen, typed ``PipelineConfig``.

``${VAR}`` in any string value is read from the environment (``${VAR:-default}`` gives a
default); a missing variable, an unknown key or a value of the wrong type is a
``ConfigError`` naming the key and the file. A variable's value is text, never re-read
as YAML: ``KAFKA_SASL_PASSWORD=0777`` stays ``"0777"`` (YAML would make it 511) and
``on`` stays ``"on"``; a typed key (a port, a boolean) converts the text as the key's
type asks, and refuses text that is not one. Raw librdkafka settings pass through
unchanged as a dict merged over the defaults. Secrets (SASL passwords, Redis passwords,
passwords inside URLs) only ever come from the environment; ``redacted()`` and every
section's ``repr`` hide them, so a config can be logged. Relative paths in a pipeline
file resolve against the folder of that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from schemas.errors import ConfigError

__all__ = [
    "AggregatesConfig",
    "BandsPolicy",
    "BatchConfig",
    "DlqConfig",
    "DriftConfig",
    "EventConfig",
    "FallbackRule",
    "FeaturesConfig",
    "FieldRule",
    "KafkaConfig",
    "MetricsConfig",
    "ModelConfig",
    "PipelineConfig",
    "SweepPolicy",
    "TopicsConfig",
    "expand_env",
    "load_pipeline",
    "redact_text",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEY = re.compile(r"(password|secret|token|credentials|private|key\.pem|\.key$)", re.I)
# user:password@ in a URL (redis://, rediss://, http://, sasl jaas strings aside).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)")


class _Frozen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: immutable, unknown keys rejected, secrets unprinted."""

    def __repr__(self) -> str:
        fields = _redact(msgspec.to_builtins(self))
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def __rich_repr__(self) -> Any:
        yield from _redact(msgspec.to_builtins(self)).items()


class KafkaConfig(_Frozen, frozen=True):
    """Broker connection and client settings.

    ``bootstrap_servers`` empty means: ``KAFKA_BOOTSTRAP_SERVERS`` from the environment,
    else the embedded broker started by ``streamscore dev up`` / the demo.
    ``settings`` apply to every client; ``consumer``/``producer`` to one kind only.
    Any librdkafka key passes through unchanged.
    """

    bootstrap_servers: str = ""
    group_id: str = ""
    settings: dict[str, str | int | float | bool] = {}
    consumer: dict[str, str | int | float | bool] = {}
    producer: dict[str, str | int | float | bool] = {}
    exactly_once: bool = False


class TopicsConfig(_Frozen, frozen=True):
    """Names (and partition count when streamscore creates them) of the pipeline's topics."""

    input: str
    decisions: str
    dead_letter: str
    drift: str
    partitions: int = 4
    replication_factor: int = 1


class EventConfig(_Frozen, frozen=True):
    """The input event: its entity key, its clock field and the allowed clock skew.

    ``key`` is the (integer) field the decision record is keyed by, ``id_field`` the
    event's unique id (a string), ``time_field`` the event's own time in unix seconds.
    An event dated more than ``max_skew_s`` seconds after the worker's clock is refused
    before scoring (one dead letter, code ``event_time_skew``): a future time would
    never look stale and would freeze its key's streaming aggregates. The fields
    themselves are the registered ``schema``'s.
    """

    key: str
    id_field: str = "event_id"
    time_field: str = "event_time"
    max_skew_s: float = msgspec.field(default=300.0)

    def __post_init__(self) -> None:
        if not self.max_skew_s >= 0:
            raise ValueError("event.max_skew_s must be >= 0")


class AggregatesConfig(_Frozen, frozen=True):
    """Streaming aggregates the worker keeps up to date as events arrive.

    ``view`` is a Feast view fed by a push source whose features are named
    ``..count_<N><unit>`` / ``..sum_<N><unit>`` (sliding windows); each event adds one to
    the counts and ``amount_field`` (an event field or a request-time feature) to the
    sums of its ``key_field`` entity.
    """

    view: str
    key_field: str
    amount_field: str


class FeaturesConfig(_Frozen, frozen=True):
    """Where features come from: a Feast repo and its references, request-time features
    (a named set of ``features.request``) and streaming aggregates."""

    repo: str
    refs: list[str] = []
    redis_url: str = ""
    timeout_ms: float = 20.0
    request: str = ""
    aggregates: AggregatesConfig | None = None


class ModelConfig(_Frozen, frozen=True):
    """Which model scores: a registry reference ``name@version|alias`` or a file."""

    ref: str
    registry: str = ""
    challenger: str = ""
    reload_check_s: float = 5.0
    reason_codes: int = 3
    # How reason codes are attributed: exact TreeSHAP (what Booster.predict(pred_contrib=
    # True) gives; ~7 ms a row on the demo fraud model, so a batch's allowance covers few
    # rows) or Saabas path attribution (~50x cheaper, also sums to the raw score, but
    # credits features split near the leaves more than SHAP does).
    reason_method: Literal["treeshap", "saabas"] = "treeshap"


class FieldRule(_Frozen, frozen=True):
    """A hard rule over one event or feature field: ``in`` a set of values, or ``above`` a
    number. A matching event gets at least ``outcome`` and is recorded as ``name``."""

    name: str
    field: str
    outcome: Literal["review", "decline"] = "review"
    in_: list[str] = msgspec.field(default_factory=list, name="in")
    above: float | None = None

    def __post_init__(self) -> None:
        if (self.above is None) == (not self.in_):
            raise ValueError(f"rule {self.name!r} needs exactly one of 'in' or 'above'")


class FallbackRule(_Frozen, frozen=True):
    """How a degraded event is decided: ``outcome`` when ``field`` is ``above``, else
    approve (a finite model score can only make it stricter)."""

    name: str
    field: str
    above: float
    outcome: Literal["review", "decline"] = "review"


class BandsPolicy(_Frozen, frozen=True, tag_field="kind", tag="bands"):
    """Score bands and hard rules for approve / review / decline.

    ``rules`` are listed by priority: the first that matches names the decision; every
    matching rule raises the outcome to at least its own.
    """

    review_above: float = 0.5
    decline_above: float = 0.85
    rules: list[FieldRule] = []
    fallback: FallbackRule | None = None


class SweepPolicy(_Frozen, frozen=True, tag_field="kind", tag="sweep"):
    """A candidate sweep: the model scores ``candidate_field`` at each multiplier of
    ``base_field``; the expected-revenue maximiser is clamped around the base."""

    base_field: str
    candidate_field: str
    candidates: list[float] = msgspec.field(
        default_factory=lambda: [0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15]
    )
    floor_ratio: float = 0.7
    ceiling_ratio: float = 1.3
    max_step_ratio: float = 0.15


class BatchConfig(_Frozen, frozen=True):
    """Micro-batching: up to ``max_messages`` or ``timeout_ms`` per consume call."""

    max_messages: int = 1024
    min_messages: int = 1
    timeout_ms: float = 5.0
    adaptive: bool = True
    # Pause the input partitions this long once input has stopped (stream.kafka.idle): a broker
    # that answers empty fetches at once (noida-db) is not spun by an idle worker; 0 = off.
    idle_backoff_ms: float = 5.0


class DriftConfig(_Frozen, frozen=True):
    """Drift windows and alarm calibration."""

    enabled: bool = True
    window_events: int = 5000
    window_seconds: float = 60.0
    sub_windows: int = 5
    false_alarm_rate: float = 0.01
    page_hinkley: bool = True


class DlqConfig(_Frozen, frozen=True):
    """Dead-letter handling and the cap that turns a flood of bad input into an incident."""

    max_payload_bytes: int = 64 * 1024
    max_bad_ratio: float = 0.5
    window_events: int = 1000


class MetricsConfig(_Frozen, frozen=True):
    """Prometheus and health endpoint."""

    port: int = 9464
    host: str = "127.0.0.1"


class PipelineConfig(_Frozen, frozen=True):
    """One pipeline, as read from ``pipelines/<name>.yaml``."""

    name: str
    kafka: KafkaConfig
    topics: TopicsConfig
    schema: str
    event: EventConfig
    features: FeaturesConfig
    model: ModelConfig
    policy: BandsPolicy | SweepPolicy
    budget_ms: float = 100.0
    batch: BatchConfig = BatchConfig()
    drift: DriftConfig = DriftConfig()
    dead_letter: DlqConfig = DlqConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: str = ""

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secret-looking values replaced by ``***``."""
        return _redact(msgspec.to_builtins(self))

    def resolve_path(self, value: str) -> Path:
        """A path from the file: absolute as given, relative to the pipeline file's folder."""
        path = Path(value).expanduser()
        if path.is_absolute() or not self.source:
            return path
        return (Path(self.source).resolve().parent / path).resolve()


def redact_text(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` replaced."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)


def _redact(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _redact(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v, key) for v in node]
    if key and _SECRET_KEY.search(key) and node not in ("", None):
        return "***"
    if isinstance(node, str):
        return redact_text(node)
    return node


def expand_env(node: Any, source: str, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(node, dict):
        return {
            k: expand_env(v, source, f"{path}.{k}" if path else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, source, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(
                    f"{source}: key '{path}' needs environment variable {name}, which is not set"
                )
            return default
        return value

    # Text, never re-read as YAML: the loader's lax conversion gives a typed key its type
    # (msgspec.convert(strict=False) reads "9464" as an int where an int is asked for).
    return _VAR.sub(sub, node)


def _explain(exc: msgspec.ValidationError, source: str) -> ConfigError:
    # msgspec says e.g. "Object contains unknown field `kafak` - at `$.topics`".
    text = str(exc)
    match = re.search(r"at `\$\.?([^`]*)`", text)
    where = match.group(1) if match else ""
    message = re.sub(r"\s*- at `[^`]*`", "", text)
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        key = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return ConfigError(f"{source}: unknown key '{key}'")
    return ConfigError(f"{source}: key '{where or '(top level)'}': {message}")


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read, expand and validate a pipeline file; every problem is one ``ConfigError``."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"pipeline file not found: {source}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {source}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    raw = expand_env(raw, source)
    raw["source"] = str(Path(path).resolve())
    try:
        return msgspec.convert(raw, PipelineConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise _explain(exc, source) from None
