"""Deployment configuration: every file parses, is schema-validated where a schema exists, and
agrees with the code and with the other files (image, metric names, Serve config, paths).

Fast: no Ray cluster, no Docker. Real validators where they exist offline: the compose-spec
and GitHub workflow JSON schemas vendored by check-jsonschema, `promtool` (Debian's prometheus
package, installed by `make test`), Ray Serve's ServeDeploySchema and lensops' own config loader.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import click
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from lensops.config import load_config
from lensops.monitoring import trigger
from lensops.monitoring.alerting import PREFIX, AlertReceivers, alertmanager_config
from lensops.runtime import SERVE_DATA_PATH
from lensops.serving import metrics as serving_metrics

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PROMETHEUS = DOCKER / "prometheus"
GRAFANA = DOCKER / "grafana"
KUBERAY = REPO / "deploy" / "kuberay"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"

SKIPPED_DIRS = {".git", ".venv", ".pytest_cache", ".ruff_cache", ".lensops", "mlruns", "data", "node_modules"}
SERVE_DEFAULT_TAGS = {"deployment", "replica", "application", "route"}
"""Tags Ray Serve adds to every custom metric of a replica (``ray.serve.metrics``)."""
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "Inf", "NaN"}
SERVICE_ENV = {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "LENSOPS_RELOAD_TOKEN"}


# ---- helpers ----


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def vendored_schema(name: str) -> dict[str, Any]:
    """A JSON schema that check-jsonschema ships (no network)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / f"{name}.json").read_text())


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def config_files() -> Iterator[Path]:
    """YAML, JSON and TOML files of the repository (local state and environments pruned)."""
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if Path(name).suffix in {".yaml", ".yml", ".json", ".toml"}:
                yield Path(root) / name


def parse_any(path: Path) -> list[Any]:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    if path.suffix == ".toml":
        return [tomllib.loads(path.read_text())]
    return list(yaml.safe_load_all(path.read_text()))


# ---- every configuration file ----


@pytest.mark.parametrize("path", list(config_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_every_configuration_file_parses(path: Path) -> None:
    assert any(doc is not None for doc in parse_any(path)), f"{path} is empty"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_with_the_config_loader(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.tracking.registered_model


# ---- Dockerfile ----


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instruction(line: str) -> Instruction:
    keyword, _, arguments = line.partition(" ")
    return Instruction(keyword.upper(), arguments.strip())


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """Instructions of docker/Dockerfile, continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in logical.splitlines()]
    return tuple(instruction(line) for line in lines if line and not line.startswith("#"))


def instructions(keyword: str) -> list[str]:
    return [i.arguments for i in dockerfile() if i.keyword == keyword]


def copy_sources() -> list[str]:
    sources = []
    for arguments in instructions("COPY"):
        words = [w for w in shlex.split(arguments) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def image_workdir() -> str:
    return instructions("WORKDIR")[-1]


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    keywords = [i.keyword for i in dockerfile()]
    users = instructions("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert keywords.index("USER") < keywords.index("CMD")
    (healthcheck,) = instructions("HEALTHCHECK")
    assert " CMD " in f" {healthcheck} " and not healthcheck.upper().startswith("NONE")


def test_dockerfile_copies_the_code_and_configs_the_image_needs() -> None:
    sources = copy_sources()
    assert {"src", "serve_app", "ray_jobs", "configs", "tuning", "serve_config.yaml", "pyproject.toml"} <= set(sources)
    missing = [s for s in sources if not (REPO / s).exists()]
    assert missing == [], f"COPY sources missing from the build context (repository root): {missing}"


def image_env() -> dict[str, str]:
    """ENV of the image (``ENV A=1 B=2`` form)."""
    pairs = [word.partition("=") for arguments in instructions("ENV") for word in shlex.split(arguments)]
    return {name: value for name, _, value in pairs}


def test_image_runs_serve_on_the_throughput_path_a_local_ray_gets() -> None:
    assert image_env().items() >= SERVE_DATA_PATH.items()


def test_image_turns_ray_token_authentication_on_without_a_token_in_it() -> None:
    env = image_env()
    assert env["RAY_AUTH_MODE"] == "token"
    assert not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(env)
    assert "auth_token" not in (DOCKER / "Dockerfile").read_text()


def test_the_image_serves_on_every_interface_and_the_repository_file_on_loopback() -> None:
    assert serve_config()["http_options"]["host"] == "127.0.0.1"
    (run,) = [run for run in instructions("RUN") if "serve_config.yaml" in run]
    (expression,) = re.findall(r"sed -i '([^']+)' serve_config.yaml", run)
    config = (REPO / "serve_config.yaml").read_text()
    in_image = subprocess.run(["sed", expression], input=config, text=True, capture_output=True, check=True).stdout
    assert yaml.safe_load(in_image)["http_options"]["host"] == "0.0.0.0"


def test_docker_build_context_keeps_local_state_out() -> None:
    ignored = set((DOCKER / "Dockerfile.dockerignore").read_text().split())
    assert {".git", ".venv", "data", "mlruns", ".lensops"} <= ignored


# ---- docker compose ----


@functools.cache
def compose() -> dict[str, Any]:
    return load_yaml(DOCKER / "docker-compose.yml")


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in value} if isinstance(value, list) else value


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume."""
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]


def is_lensops_image(service: dict[str, Any]) -> bool:
    return service.get("build", {}).get("dockerfile") == "docker/Dockerfile"


def has_healthcheck(service: dict[str, Any]) -> bool:
    own = service.get("healthcheck", {})
    return not own.get("disable", False) and ("test" in own or is_lensops_image(service))


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart", "no") == "no"


def test_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(compose(), vendored_schema("compose-spec")) == []


def test_compose_stack_has_the_services_of_the_platform() -> None:
    platform = {"ray-head", "ray-worker", "mlflow", "postgres", "minio", "minio-init", "prometheus", "grafana"}
    assert platform | {"alertmanager-config", "alertmanager"} <= set(services())


def test_compose_dependencies_exist_and_their_conditions_can_be_met() -> None:
    for name, service in services().items():
        for target, spec in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert has_healthcheck(services()[target]), f"{name} waits for {target}, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert one_shot(services()[target]), f"{name} waits for {target} to exit, but it restarts"


def test_long_running_compose_services_have_healthchecks() -> None:
    missing = [name for name, s in services().items() if not one_shot(s) and not has_healthcheck(s)]
    assert missing == []


def test_compose_volumes_are_declared_and_bind_mounts_exist() -> None:
    declared = set(compose().get("volumes", {}))
    for name, service in services().items():
        for source, _ in volume_mounts(service):
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
        for network in service.get("networks", []):
            assert network in compose().get("networks", {}), f"{name} uses undeclared network {network}"


def test_compose_builds_the_lensops_image_from_the_repository() -> None:
    for service in services().values():
        if "build" in service:
            context = DOCKER / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()


def command_flag(command: list[str], flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{flag}=")]
    return value


def test_lensops_processes_find_mlflow_and_minio_in_the_stack() -> None:
    mlflow_port = command_flag(services()["mlflow"]["command"], "--port")
    for name in ("ray-head", "ray-worker", "serve-deploy"):
        env = services()[name]["environment"]
        assert set(env) >= SERVICE_ENV, name
        assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_the_mlflow_artifact_bucket_is_created_by_the_init_service() -> None:
    destination = command_flag(services()["mlflow"]["command"], "--artifacts-destination")
    bucket = re.fullmatch(r"s3://([^/]+)/.*", destination).group(1)
    assert f"local/{bucket}" in services()["minio-init"]["command"]
    assert "postgres:5432" in command_flag(services()["mlflow"]["command"], "--backend-store-uri")


def mount_target(service: str, source: str) -> str:
    (target,) = [t for s, t in volume_mounts(services()[service]) if s == source]
    return target


def test_prometheus_and_grafana_read_ray_files_where_the_head_writes_them() -> None:
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    ray_tmp = mount_target("ray-head", "ray-tmp")
    assert mount_target("prometheus", "ray-tmp") == mount_target("grafana", "ray-tmp") == ray_tmp == "/tmp/ray"
    (ray_job,) = [job for job in prometheus_config()["scrape_configs"] if job["job_name"] == "ray"]
    assert ray_job["file_sd_configs"][0]["files"] == [f"{ray_tmp}/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    providers = {p["name"]: p["options"]["path"] for p in dashboard_providers()}
    assert providers["ray"] == services()["ray-head"]["environment"]["RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"]
    assert providers["lensops"] == mount_target("grafana", "./grafana/dashboards")
    assert mount_target("prometheus", "./prometheus") == "/etc/prometheus"


# ---- Prometheus ----


@functools.cache
def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS / "prometheus.yml")


@functools.cache
def alert_rules() -> tuple[dict[str, Any], ...]:
    return tuple(rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"])


@functools.cache
def recording_rules() -> tuple[dict[str, Any], ...]:
    return tuple(rule for group in load_yaml(PROMETHEUS / "records.yml")["groups"] for rule in group["rules"])


def promtool(*args: str) -> None:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make system-packages` installs Debian's prometheus package"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_prometheus_config_and_its_rule_files() -> None:
    promtool("check", "config", "prometheus.yml")


def test_promtool_accepts_the_alert_and_recording_rules() -> None:
    promtool("check", "rules", "alerts.yml", "records.yml")


def test_alerts_fire_on_their_symptoms_in_promtool_unit_tests() -> None:
    promtool("test", "rules", "alerts.test.yml")


def test_prometheus_sends_alerts_to_the_stacks_alertmanager() -> None:
    (manager,) = prometheus_config()["alerting"]["alertmanagers"]
    (target,) = manager["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services() and services()[host]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert depends_on(services()[host])["alertmanager-config"]["condition"] == "service_completed_successfully"


def test_compose_passes_only_alert_variables_that_lensops_reads() -> None:
    passed = set(services()["alertmanager-config"]["environment"])
    read = {f"{PREFIX}{name.upper()}" for name in AlertReceivers.model_fields}
    assert passed <= read and {f"{PREFIX}WEBHOOK_URL", f"{PREFIX}EMAIL_TO", f"{PREFIX}SMTP_PASSWORD"} <= passed


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WEBHOOK_URL": "http://hooks.example/lensops"},
        {"EMAIL_TO": "ops@example.org", "EMAIL_FROM": "lensops@example.org", "SMTP_SMARTHOST": "smtp.example.org:587"},
        {
            "WEBHOOK_URL": "http://hooks.example/lensops",
            "EMAIL_TO": "a@example.org,b@example.org",
            "EMAIL_FROM": "lensops@example.org",
            "SMTP_SMARTHOST": "smtp.example.org:587",
            "SMTP_USERNAME": "lensops",
            "SMTP_PASSWORD": "secret",
        },
    ],
    ids=["no-receiver", "webhook", "email", "both"],
)
def test_amtool_accepts_the_rendered_alertmanager_config(env: dict[str, str], tmp_path: Path) -> None:
    receivers = AlertReceivers.from_env({f"{PREFIX}{key}": value for key, value in env.items()})
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(receivers)))
    binary = shutil.which("amtool")
    assert binary, "amtool is missing: `make system-packages` installs Debian's prometheus-alertmanager package"
    done = subprocess.run([binary, "check-config", "alertmanager.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_cover_errors_latency_replicas_and_rejected_inputs() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "LensopsHighErrorRate",
        "LensopsHighP99Latency",
        "LensopsNoHealthyModelReplicas",
        "LensopsModelDegraded",
        "LensopsRejectedInputSpike",
        "LensopsPredictionLogFailing",
        "LensopsLiveAccuracyLow",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "warning", "info"}
        assert rule["annotations"]["summary"]


# ---- metric names: what the dashboards and alerts query must exist ----


@dataclass(frozen=True)
class Declared:
    name: str
    kind: str
    tag_keys: tuple[str, ...]

    def exported(self) -> set[str]:
        """Names on the /metrics page: Ray prefixes ``ray_``; counters end in ``_total``."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return {base if base.endswith("_total") else f"{base}_total"}
        if self.kind == "histogram":
            return {f"{base}_{suffix}" for suffix in ("bucket", "sum", "count")}
        return {base}


@functools.cache
def lensops_metrics() -> dict[str, Declared]:
    """Exported name -> declaration, by building every metrics class of lensops.serving.metrics with
    recording stand-ins for Ray's Counter, Gauge and Histogram."""
    declared: list[Declared] = []

    def recorder(kind: str) -> Any:
        def make(name: str, description: str = "", tag_keys: tuple[str, ...] | None = None, **_: Any) -> Any:
            declared.append(Declared(name, kind, tuple(tag_keys or ())))
            return mock.Mock()

        return make

    classes = [
        obj
        for obj in vars(serving_metrics).values()
        if isinstance(obj, type) and obj.__module__ == serving_metrics.__name__
    ]
    with mock.patch.multiple(
        serving_metrics, Counter=recorder("counter"), Gauge=recorder("gauge"), Histogram=recorder("histogram")
    ):
        for cls in classes:
            cls()
    return {name: d for d in declared for name in d.exported()}


@functools.cache
def ray_serve_metrics() -> frozenset[str]:
    """Ray Serve's metrics as Ray's own Serve dashboards query them (exact exported names)."""
    from ray.dashboard.modules.metrics.dashboards import serve_dashboard_panels, serve_deployment_dashboard_panels

    panels = (
        serve_dashboard_panels.SERVE_GRAFANA_PANELS + serve_deployment_dashboard_panels.SERVE_DEPLOYMENT_GRAFANA_PANELS
    )
    exprs = " ".join(target.expr for panel in panels for target in panel.targets)
    return frozenset(name for name in re.findall(r"\bray_serve_\w+", exprs) if name != "ray_serve_")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left once strings, label matchers,
    ranges and grouping clauses are removed, and that are not function calls."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", stripped):
        if not stripped[match.end() :].lstrip().startswith("(") and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def lensops_selector_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) for each label matcher on a lensops metric."""
    for metric, matchers in re.findall(r"\b(ray_lensops_\w+)\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            yield metric, label


def dashboard_exprs() -> list[str]:
    dashboard = lensops_dashboard()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variables = [variable["query"]["query"] for variable in dashboard["templating"]["list"] if "query" in variable]
    return exprs + [variable_expr(query) for query in variables]


def variable_expr(query: str) -> str:
    """The PromQL inside a Grafana variable query: ``label_values(<expr>, <label>)`` -> ``<expr>``."""
    return re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query.strip())


def queried_exprs() -> list[str]:
    return dashboard_exprs() + [rule["expr"] for rule in (*alert_rules(), *recording_rules())]


def test_metric_name_extraction_ignores_functions_labels_and_ranges() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y(z)"}[$__rate_interval]))) / b_total or vector(0)'
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_lensops_metric_declarations_are_found() -> None:
    assert {
        "ray_lensops_predictions_total",
        "ray_lensops_batch_size_bucket",
        "ray_lensops_active_model_version",
    } <= set(lensops_metrics())
    assert {"ray_serve_num_http_requests_total", "ray_serve_deployment_replica_healthy"} <= ray_serve_metrics()


def test_dashboards_and_alerts_query_only_metrics_that_exist() -> None:
    pushed = set(trigger.GAUGES)  # the drift monitor's, through the Pushgateway
    known = set(lensops_metrics()) | ray_serve_metrics() | pushed | {rule["record"] for rule in recording_rules()}
    unknown = {name for expr in queried_exprs() for name in metric_names(expr)} - known
    assert unknown == set(), "not exported by lensops.serving.metrics or Ray Serve"


def test_lensops_metrics_are_filtered_only_on_labels_they_carry() -> None:
    for expr in queried_exprs():
        for metric, label in lensops_selector_labels(expr):
            allowed = set(lensops_metrics()[metric].tag_keys) | SERVE_DEFAULT_TAGS | {"le"}
            assert label in allowed, f"{metric} has no label {label}"


# ---- Grafana ----


@functools.cache
def lensops_dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "lensops-service.json").read_text())


def dashboard_providers() -> list[dict[str, Any]]:
    return load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]


def provisioned_datasource() -> dict[str, Any]:
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    return datasource


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource["uid"]
    port = prometheus_port()
    assert datasource["url"] == f"http://prometheus:{port}"


def prometheus_port() -> str:
    ports = services()["prometheus"]["ports"]
    (published,) = ports
    return published.rsplit(":", 1)[1]


def test_dashboard_panels_query_the_provisioned_datasource() -> None:
    uid = provisioned_datasource()["uid"]
    panels = lensops_dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["title"] and panel["datasource"]["uid"] == uid
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == uid, panel["title"]


def test_dashboard_shows_traffic_errors_latency_batching_predictions_and_replicas() -> None:
    exprs = " ".join(dashboard_exprs())
    for metric in (
        "ray_serve_num_http_requests_total",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_lensops_batch_size_bucket",
        "ray_lensops_predictions_total",
        "ray_lensops_rejected_inputs_total",
        "ray_serve_deployment_replica_healthy",
    ):
        assert metric in exprs
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket" in exprs
    assert 'status_code=~"5.."' in exprs
    assert "by (model_version, label)" in exprs


def test_grafana_home_dashboard_is_the_provisioned_lensops_one() -> None:
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mount_target('grafana', './grafana/dashboards')}/lensops-service.json"


# ---- KubeRay ----


@functools.cache
def kuberay_docs() -> tuple[dict[str, Any], ...]:
    return tuple(load_all_yaml(sorted(KUBERAY.glob("*.yaml"))))


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in kuberay_docs() if doc["kind"] == kind]


def ray_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def ray_docs() -> list[dict[str, Any]]:
    return of_kind("RayJob") + of_kind("RayService")


def pod_specs(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def gpu_groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    def gpus(group: dict[str, Any]) -> int:
        return sum(
            int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in group["template"]["spec"]["containers"]
        )

    return [group for group in cluster["workerGroupSpecs"] if gpus(group) > 0]


def test_kuberay_manifests_are_well_formed() -> None:
    kinds = sorted(doc["kind"] for doc in kuberay_docs())
    assert kinds == ["ConfigMap", "CronJob", "RayJob", "RayJob", "RayService", "Secret"]
    versions = {"CronJob": "batch/v1", "RayJob": "ray.io/v1", "RayService": "ray.io/v1"}
    for doc in kuberay_docs():
        assert doc["metadata"]["name"]
        assert doc["apiVersion"] == versions.get(doc["kind"], "v1")
    for doc in of_kind("RayJob"):
        assert doc["spec"]["entrypoint"] and doc["spec"]["shutdownAfterJobFinishes"] is True


def test_kuberay_clusters_have_a_head_and_a_gpu_group_scaling_from_zero() -> None:
    ray_requirement = next(Requirement(d) for d in pyproject()["project"]["dependencies"] if d.startswith("ray["))
    for doc in ray_docs():
        cluster = ray_cluster(doc)
        assert ray_requirement.specifier.contains(cluster["rayVersion"]), doc["metadata"]["name"]
        assert cluster["enableInTreeAutoscaling"] is True
        (gpu,) = gpu_groups(cluster)
        assert (
            gpu["minReplicas"] == 0 < gpu["maxReplicas"] and gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
        )
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            params = group["rayStartParams"]
            assert all(isinstance(v, str) for v in params.values()), "rayStartParams values must be strings"
            assert params["metrics-export-port"] == "8080"


def test_kuberay_pods_run_the_cluster_yaml_image_with_the_lensops_environment() -> None:
    image = load_yaml(REPO / "cluster.yaml")["docker"]["image"]
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in of_kind("ConfigMap")}
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in of_kind("Secret")}
    for doc in ray_docs():
        for pod in pod_specs(ray_cluster(doc)):
            for container in pod["containers"]:
                assert container["image"] == image
                env = set()
                for source in container["envFrom"]:
                    kind, ref = next(iter(source.items()))
                    env |= set((config_maps if kind == "configMapRef" else secrets)[ref["name"]])
                assert SERVICE_ENV | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env


def cli_command(verb: str) -> click.Command:
    import typer

    from lensops.cli import app

    return typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]


def entrypoint(doc: dict[str, Any]) -> tuple[Path, dict[str, list[str]]]:
    """(script, {flag: values}) of a RayJob entrypoint ``python <script> --flag value ...``."""
    python, script, *rest = shlex.split(doc["spec"]["entrypoint"])
    assert python == "python"
    flags: dict[str, list[str]] = {}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        assert flag.startswith("--"), rest
        flags.setdefault(flag, []).append(value)
    return REPO / script, flags


@pytest.mark.parametrize("name", ["lensops-train", "lensops-pipeline"])
def test_rayjob_entrypoints_run_a_shipped_job_with_valid_arguments(name: str) -> None:
    (doc,) = [doc for doc in of_kind("RayJob") if doc["metadata"]["name"] == name]
    script, flags = entrypoint(doc)
    assert script.parent == REPO / "ray_jobs" and script.is_file(), script
    assert script.parent.name in copy_sources() and image_workdir() == "/home/ray/lensops"
    assert f'main("{script.stem}")' in script.read_text(), f"{script.name} does not run `lensops {script.stem}`"
    accepted = {option for param in cli_command(script.stem).params for option in param.opts}
    for flag in flags:
        assert flag in accepted, f"`lensops {script.stem}` takes no {flag}"
    (config,) = flags["--config"]
    overrides = flags.get("--set", []) + [f"data.source={v}" for v in flags.get("--data", [])]
    cfg = load_config(REPO / config, overrides)
    assert cfg.train.use_gpu and cfg.train.storage_path.startswith("s3://")


def test_the_monitor_cronjob_runs_the_shipped_monitor_job_against_the_rayservice() -> None:
    (cron,) = of_kind("CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    python, script, source, *rest = container["command"]
    assert python == "python" and (REPO / script).is_file() and 'main("monitor")' in (REPO / script).read_text()
    assert source.startswith("s3://") and container["image"] == load_yaml(REPO / "cluster.yaml")["docker"]["image"]
    flags = dict(zip(rest[::2], rest[1::2], strict=True))
    accepted = {option for param in cli_command("monitor").params for option in param.opts}
    assert set(flags) <= accepted, set(flags) - accepted
    cfg = load_config(REPO / flags["--config"], [f"monitor.on_drift={flags['--on-drift']}"])
    assert cfg.monitor.on_drift == "retrain" and flags["--retrain-data"].startswith("s3://")
    (service,) = of_kind("RayService")
    assert flags["--jobs-address"] == f"http://{service['metadata']['name']}-head-svc:8265"
    assert {"configMapRef", "secretRef"} == {next(iter(source)) for source in container["envFrom"]}


def test_pipeline_job_notifies_the_rayservice() -> None:
    (pipeline,) = [doc for doc in of_kind("RayJob") if "pipeline.py" in doc["spec"]["entrypoint"]]
    (service,) = of_kind("RayService")
    (url,) = entrypoint(pipeline)[1]["--service-url"]
    assert url == f"http://{service['metadata']['name']}-serve-svc:{serve_config()['http_options']['port']}"


@functools.cache
def serve_config() -> dict[str, Any]:
    return load_yaml(REPO / "serve_config.yaml")


def test_rayservice_serves_the_serve_config_application_on_gpus() -> None:
    from ray.serve.schema import ServeDeploySchema

    (service,) = of_kind("RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = ServeDeploySchema.model_validate(embedded).applications
    load_config(app.args.get("config"), app.args["overrides"])
    expected = copy.deepcopy(serve_config()["applications"])
    (model,) = [d for d in expected[0]["deployments"] if d["name"] == "Model"]
    model["ray_actor_options"]["num_gpus"] = 1
    assert embedded["applications"] == expected, "serveConfigV2 drifted from serve_config.yaml"
    assert gpu_groups(ray_cluster(service)), "Model replicas need a GPU worker group"


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---- GitHub workflow ----


def load_workflow() -> dict[str, Any]:
    """The workflow as GitHub reads it: YAML 1.1 would turn the ``on`` key into True."""
    workflow = load_yaml(WORKFLOW)
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps() -> list[dict[str, Any]]:
    return [step for job in load_workflow()["jobs"].values() for step in job.get("steps", [])]


def test_workflow_matches_the_github_workflow_schema() -> None:
    assert schema_errors(load_workflow(), vendored_schema("github-workflows")) == []


def test_workflow_runs_the_unit_tier_on_every_supported_python() -> None:
    unit = load_workflow()["jobs"]["unit"]
    supported = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest, below = (part.strip(">=<") for part in supported.split(","))
    low, high = (int(version.split(".")[1]) for version in (lowest, below))
    assert unit["strategy"]["matrix"]["python-version"] == [f"3.{minor}" for minor in range(low, high)]
    assert any(step.get("run", "").endswith("pytest tests/unit -q") for step in unit["steps"])


def test_workflow_lints_runs_the_ci_script_and_builds_the_image_on_push() -> None:
    workflow = load_workflow()
    assert "push" in workflow["on"]
    runs = [step["run"] for step in steps() if "run" in step]
    assert any(fnmatch.fnmatch(run, "*ruff check*") for run in runs)
    assert any(fnmatch.fnmatch(run, "*ruff format --check*") for run in runs)
    assert "bash .ci/run" in runs and (REPO / ".ci" / "run").is_file()
    (build,) = [step for step in steps() if step.get("uses", "").startswith("docker/build-push-action@")]
    assert (REPO / build["with"]["context"] / build["with"]["file"]).resolve() == (DOCKER / "Dockerfile").resolve()
    assert any("docker/docker-compose.yml config" in run for run in runs)
