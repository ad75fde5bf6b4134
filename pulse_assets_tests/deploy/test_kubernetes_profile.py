"""The kubernetes profile, validated by loading it (there is no cluster here): the instance
YAML against Dagster's instance schema and each configurable class's own config type, the
Helm values translated to the run launcher's fields against the same type, the code location
started as the chart starts it, the settings, the executor config, and no inline secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import class_from_code_pointer
from dagster._grpc.client import DagsterGrpcClient
from dagster._serdes import ConfigurableClass
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_postgres import DagsterPostgresStorage

from pulse_assets.config import (
    CONFIG_ENV_VAR,
    DEPLOY_ROOT,
    PROFILE_ENV_VAR,
    artifacts_uri,
    checkpoints_root,
    instance_yaml_path,
    load_settings,
    sql_url,
    store_root,
    tracking_uri,
)
from pulse_assets.errors import ConfigError
from pulse_assets_tests.deploy.conftest import PLANTED_PASSWORD
from pulse_assets_tests.ports import free_port

PROFILE = DEPLOY_ROOT / "kubernetes"
RELEASE = "pulse"  # the Helm release name the README installs
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default
# Variables whose values are secrets: they may reach a pod only from a Kubernetes Secret.
SECRET_VARIABLES = {
    "PGPASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "OPENAI_API_KEY",
    "PULSE_ALERT_WEBHOOK_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
}
SECRET_NAMES = {"pulse-secrets", "pulse-aws", "dagster-postgresql-secret"}  # README's Secrets


def profile_yaml(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((PROFILE / name).read_text())
    assert isinstance(loaded, dict), f"{PROFILE / name} must hold a mapping"
    return loaded


def code_location(values: Mapping[str, Any]) -> dict[str, Any]:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "values.yaml should declare the one pulse_assets code location"
    return dict(deployments[0])


@pytest.fixture
def kubernetes_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a pod of the code location: the values' `env`, plus test values for
    what the Secrets and the non-Helm ConfigMap hold. Returns the variables set."""
    for name in (CONFIG_ENV_VAR, "PULSE_SQL_URL", "PGSERVICE", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    variables = {
        str(k): str(v) for k, v in code_location(profile_yaml("values.yaml"))["env"].items()
    }
    assert variables.get(PROFILE_ENV_VAR) == "kubernetes", (
        f"values.yaml: the code location's env must set {PROFILE_ENV_VAR}: kubernetes"
    )
    variables |= {
        "PULSE_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PULSE_COMPUTE_LOGS_BUCKET": "pulse-logs-test",
        "PGPASSWORD": PLANTED_PASSWORD,
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    }
    (tmp_path / "dagster_home").mkdir()
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def processed(config_type: Any, config: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``config`` after Dagster's own config processing against ``config_type`` (env
    references resolved, defaults filled); a failure lists every error Dagster found."""
    result = process_config(config_type, config)
    errors = "; ".join(error.message for error in result.errors or [])
    assert result.success, f"{what} does not validate: {errors}"
    assert result.value is not None
    return dict(result.value)


def validated_class(
    section: Mapping[str, Any], expected: type[ConfigurableClass], what: str
) -> dict[str, Any]:
    """A configurable-class section (module, class, config): the class resolves by import and
    is ``expected``, and the config validates against its ``config_type()``."""
    resolved = class_from_code_pointer(section["module"], section["class"])
    assert resolved is expected, f"{what} names {resolved}, expected {expected}"
    return processed(expected.config_type(), section.get("config") or {}, what)


# --- the instance -------------------------------------------------------------------------


def test_the_profile_is_selected_by_its_name(kubernetes_env: dict[str, str]) -> None:
    assert instance_yaml_path() == PROFILE / "dagster.yaml"


def test_the_instance_validates_against_dagsters_schemas(kubernetes_env: dict[str, str]) -> None:
    """The whole file against Dagster's instance schema, then each class section against
    its class's own config type. The launcher is validated, not instantiated here: its
    constructor loads the in-cluster kube config (see the next test)."""
    instance, custom_class = dagster_instance_config(str(PROFILE))
    assert custom_class is None
    storage = {
        "module": "dagster_postgres",
        "class": "DagsterPostgresStorage",
        "config": instance["storage"]["postgres"],
    }
    postgres = validated_class(storage, DagsterPostgresStorage, "storage")["postgres_db"]
    assert postgres["hostname"] == kubernetes_env["PGHOST"] and postgres["port"] == 5432
    assert "password" not in instance["storage"]["postgres"]["postgres_db"], (
        "the password comes from PGPASSWORD through libpq only, never from Dagster's config"
    )
    launcher = validated_class(instance["run_launcher"], K8sRunLauncher, "run_launcher")
    assert launcher["load_incluster_config"] is True
    assert launcher["service_account_name"] and launcher["instance_config_map"]
    assert launcher["env_vars"] == ["PULSE_PROFILE=kubernetes"]
    assert set(launcher["env_secrets"]) <= SECRET_NAMES
    coordinator = validated_class(
        instance["run_coordinator"], dg.QueuedRunCoordinator, "run_coordinator"
    )
    assert coordinator["max_concurrent_runs"] >= 1
    logs = validated_class(instance["compute_logs"], S3ComputeLogManager, "compute_logs")
    assert logs["bucket"] == kubernetes_env["PULSE_COMPUTE_LOGS_BUCKET"]
    assert instance["run_monitoring"]["enabled"] is True


def test_the_launcher_constructs_from_the_profile(tmp_path: Path) -> None:
    """Every key reaches K8sRunLauncher's constructor (which validates more than the config
    type: service_account_name is required there). A kubeconfig for an unused loopback port
    stands in for the in-cluster config; the constructor makes no API call."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "none", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "none", "user": {}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    section = profile_yaml("dagster.yaml")["run_launcher"]
    config = processed(K8sRunLauncher.config_type(), section["config"], "run_launcher")
    config |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    launcher = K8sRunLauncher.from_config_value(None, config)
    assert launcher.service_account_name == section["config"]["service_account_name"]
    assert launcher.job_namespace == section["config"]["job_namespace"]
    assert launcher.image_pull_policy == section["config"]["image_pull_policy"]
    assert launcher.env_secrets == section["config"]["env_secrets"]


def test_a_misspelled_launcher_key_is_rejected_by_name() -> None:
    config = dict(profile_yaml("dagster.yaml")["run_launcher"]["config"])
    config["job_namspace"] = config.pop("job_namespace")
    result = process_config(K8sRunLauncher.config_type(), config)
    assert not result.success, "a misspelled K8sRunLauncher key was accepted"
    assert any("job_namspace" in error.message for error in result.errors or []), [
        error.message for error in result.errors or []
    ]


# --- the Helm values ----------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def chart_launcher_config(values: Mapping[str, Any], release: str) -> dict[str, Any]:
    """The K8sRunLauncher config the chart writes from ``runLauncher.config.k8sRunLauncher``
    (helm/dagster/templates/helpers/_helpers-instance.tpl, dagsterYaml.runLauncher.k8s): keys
    become the launcher's snake_case fields, ``envSecrets``/``envConfigMaps`` lists of names,
    ``image`` the ``job_image``; the chart adds the service account, the instance ConfigMap,
    DAGSTER_HOME and the PostgreSQL Secret. An unknown key passes through, translated, so
    the launcher's config type rejects it by name."""
    section = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {}
    for key, value in section.items():
        if key in ("envSecrets", "envConfigMaps"):
            config[_snake(key)] = [entry["name"] for entry in value]
        elif key == "image":
            config["job_image"] = f"{value['repository']}:{value['tag']}"
        elif key == "runK8sConfig":
            config["run_k8s_config"] = {_snake(k): v for k, v in value.items()}
        else:
            config[_snake(key)] = value
    config.setdefault("job_namespace", release)
    global_ = values.get("global", {})
    return config | {
        "service_account_name": global_["serviceAccountName"],
        "instance_config_map": f"{release}-dagster-instance",
        "dagster_home": global_.get("dagsterHome", CHART_DAGSTER_HOME),
        "postgres_password_secret": global_.get(
            "postgresqlSecretName", "dagster-postgresql-secret"
        ),
    }


def test_the_values_launcher_validates_and_equals_the_instance() -> None:
    values = profile_yaml("values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    chart = processed(
        K8sRunLauncher.config_type(), chart_launcher_config(values, RELEASE), "values.yaml"
    )
    ours = processed(
        K8sRunLauncher.config_type(),
        profile_yaml("dagster.yaml")["run_launcher"]["config"],
        "dagster.yaml",
    )
    # Only the Helm path has the PostgreSQL Secret (the chart's storage reads
    # DAGSTER_PG_PASSWORD); only the plain path needs pulse-env (with Helm the run pods get
    # the code location's env through includeConfigInLaunchedRuns).
    differ = {"postgres_password_secret", "env_config_maps"}
    for key in sorted(set(chart) | set(ours)):
        if key not in differ:
            assert chart.get(key) == ours.get(key), (
                f"run launcher {key}: values.yaml gives {chart.get(key)!r}, dagster.yaml "
                f"{ours.get(key)!r}; keep configs/deploy/kubernetes/ in step"
            )
    assert code_location(values)["includeConfigInLaunchedRuns"]["enabled"] is True


def test_a_misspelled_values_key_is_rejected_by_name() -> None:
    values = profile_yaml("values.yaml")
    section = values["runLauncher"]["config"]["k8sRunLauncher"]
    section["jobNamspace"] = section.pop("jobNamespace")
    result = process_config(K8sRunLauncher.config_type(), chart_launcher_config(values, RELEASE))
    assert not result.success, "a misspelled k8sRunLauncher key in the values was accepted"
    assert any("job_namspace" in error.message for error in result.errors or [])


def test_the_values_instance_equals_the_profile_instance(kubernetes_env: dict[str, str]) -> None:
    """What the chart renders into its instance ConfigMap from these values (queue, run
    monitoring, compute logs, retention, storage) is what dagster.yaml configures, and the
    database of Dagster's storage is the one the code location's PG* variables name (the
    Pulse SQL store's default)."""
    values = profile_yaml("values.yaml")
    instance, _ = dagster_instance_config(str(PROFILE))
    daemon, postgres = values["dagsterDaemon"], values["postgresql"]
    queue = daemon["runCoordinator"]
    assert queue["enabled"] and queue["type"] == "QueuedRunCoordinator", queue
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    logs_type = S3ComputeLogManager.config_type()
    chart_logs = processed(
        logs_type,
        {
            _snake(k): v
            for k, v in values["computeLogManager"]["config"]["s3ComputeLogManager"].items()
        },
        "values.yaml computeLogManager",
    )
    our_logs = processed(logs_type, instance["compute_logs"]["config"], "compute_logs")
    assert our_logs["bucket"] == kubernetes_env["PULSE_COMPUTE_LOGS_BUCKET"]  # from pulse-env
    assert values["retention"]["enabled"] and not postgres["enabled"]
    assert values["generatePostgresqlPasswordSecret"] is False
    storage, env = instance["storage"]["postgres"]["postgres_db"], code_location(values)["env"]
    pairs = {
        "max concurrent runs": (
            queue["config"]["queuedRunCoordinator"]["maxConcurrentRuns"],
            instance["run_coordinator"]["config"]["max_concurrent_runs"],
        ),
        "run monitoring": (
            {_snake(k): v for k, v in daemon["runMonitoring"].items()},
            instance["run_monitoring"],
        ),
        "compute logs (but the bucket)": (chart_logs | {"bucket": 0}, our_logs | {"bucket": 0}),
        "retention": (
            {
                k: {"purge_after_days": values["retention"][k]["purgeAfterDays"]}
                for k in ("schedule", "sensor")
            },
            instance["retention"],
        ),
        "telemetry": (values["telemetry"], instance["telemetry"]),
        "postgres scheme": (postgres["postgresqlScheme"], storage["scheme"]),
        "postgres params": (postgres["postgresqlParams"], storage["params"]),
        "postgres host, user, database, port vs the code location's PG*": (
            [postgres[k] for k in ("postgresqlHost", "postgresqlUsername", "postgresqlDatabase")]
            + [str(postgres["service"]["port"])],
            [env[k] for k in ("PGHOST", "PGUSER", "PGDATABASE", "PGPORT")],
        ),
    }
    for what, (chart, ours) in pairs.items():
        assert chart == ours, f"{what}: values.yaml gives {chart!r}, dagster.yaml {ours!r}"


def test_one_pinned_image_runs_every_pod() -> None:
    values = profile_yaml("values.yaml")
    images = {part: values[part]["image"] for part in ("dagsterWebserver", "dagsterDaemon")} | {
        "code location": code_location(values)["image"]
    }
    assert len({(i["repository"], str(i["tag"])) for i in images.values()}) == 1, images
    assert all(str(i["tag"]) not in ("", "latest") for i in images.values()), (
        "tag the image per build: run pods pull the code location's image by tag"
    )


@pytest.fixture
def code_server(kubernetes_env: dict[str, str], tmp_path: Path) -> Iterator[DagsterGrpcClient]:
    """The code location's server as the chart starts it: ``dagster api grpc -h ... -p ...
    <dagsterApiGrpcArgs>`` with the values' env (and DAGSTER_CURRENT_IMAGE, which the chart
    sets from the image)."""
    location = code_location(profile_yaml("values.yaml"))
    image = location["image"]
    port = free_port()
    log = tmp_path / "code_server.log"
    env = dict(os.environ) | {"DAGSTER_CURRENT_IMAGE": f"{image['repository']}:{image['tag']}"}
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "api",
        "grpc",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        *location["dagsterApiGrpcArgs"],
    ]
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    try:
        deadline = time.monotonic() + 180
        while client.health_check_query() != "SERVING":
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the code server ({' '.join(command)}) did not start with the values' env: "
                    f"{log.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_code_location_loads_with_the_values_env(code_server: DagsterGrpcClient) -> None:
    from dagster._api.list_repositories import sync_list_repositories_grpc

    response = sync_list_repositories_grpc(code_server)
    assert response.repository_symbols, "the code server loaded no repository"
    assert code_server.get_current_image()


def test_settings_on_the_cluster(
    kubernetes_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    assert store_root(settings) == kubernetes_env["PULSE_STORE_ROOT"]
    assert checkpoints_root(settings) == kubernetes_env["PULSE_CHECKPOINTS_ROOT"]
    assert artifacts_uri(settings) == kubernetes_env["PULSE_MLFLOW_ARTIFACTS_URI"]
    assert tracking_uri(settings) == kubernetes_env["MLFLOW_TRACKING_URI"]
    assert sql_url(settings) == "postgresql+psycopg://"  # libpq's PG* variables
    for location in (store_root(settings), checkpoints_root(settings), artifacts_uri(settings)):
        assert location.startswith("s3://"), f"{location}: a pod's local disk dies with the pod"
    assert tracking_uri(settings).startswith("http"), "runs log to the MLflow tracking server"
    monkeypatch.delenv("PULSE_STORE_ROOT")
    with pytest.raises(ConfigError, match=r"store\.root: .*PULSE_STORE_ROOT, which is not set"):
        load_settings()


def test_the_executor_config_validates_for_real_steps(kubernetes_env: dict[str, str]) -> None:
    from pulse_assets.definitions import build_definitions

    config = profile_yaml("k8s_executor.yaml")
    schema = k8s_job_executor.config_schema.config_type
    processed(schema, config, "k8s_executor.yaml")
    defs = build_definitions(load_settings())
    ops = {assets.node_def.name for assets in defs.resolve_asset_graph().assets_defs}
    unknown = set(config["per_step_k8s_config"]) - ops
    assert not unknown, f"per_step_k8s_config names no step: {sorted(unknown)}"
    misspelled = config | {"max_concurent": config["max_concurrent"]}
    result = process_config(schema, misspelled)
    assert not result.success and "max_concurent" in str([e.message for e in result.errors or []])


# --- no inline secret ----------------------------------------------------------------------

_SECRETISH_KEY = re.compile(r"pass(word|wd)?|secret|token|api_?key|access_?key", re.IGNORECASE)
_SECRETISH_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{16,}|://[^/\s:@]+:[^/\s@]+@|hooks\.slack\.com"
)
_SECRET_REFERENCE_KEYS = {"envSecrets", "env_secrets", "postgresqlSecretName"}


def inline_secrets(node: Any, path: str = "") -> list[str]:
    """Where a document holds something that looks like a secret value: a password-, key- or
    token-named key with a literal value, a secret variable set in an ``env``, or a value
    shaped like an AWS key id, an OpenAI key, a URL with a password or a webhook."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key) in _SECRET_REFERENCE_KEYS:
                continue
            literal = isinstance(value, str | int) and not isinstance(value, bool) and value != ""
            if _SECRETISH_KEY.search(str(key)) and literal:
                found.append(where)
            if str(key) in SECRET_VARIABLES:
                found.append(where)
            found += inline_secrets(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += inline_secrets(value, f"{path}[{index}]")
            if isinstance(value, str) and value.split("=", 1)[0] in SECRET_VARIABLES:
                found.append(f"{path}[{index}]")
    elif isinstance(node, str) and _SECRETISH_VALUE.search(node):
        found.append(path)
    return found


def test_no_secret_is_inline_in_the_profile() -> None:
    for name in ("dagster.yaml", "values.yaml", "pulse.yaml", "k8s_executor.yaml"):
        assert not inline_secrets(profile_yaml(name)), (
            f"{name} holds a secret value at {inline_secrets(profile_yaml(name))}"
        )
    values = profile_yaml("values.yaml")
    referenced = {entry["name"] for entry in code_location(values)["envSecrets"]}
    referenced |= {
        e["name"] for e in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    }
    referenced |= {e["name"] for e in values["dagsterWebserver"]["envSecrets"]}
    referenced |= set(profile_yaml("dagster.yaml")["run_launcher"]["config"]["env_secrets"])
    referenced.add(values["global"]["postgresqlSecretName"])
    assert referenced == SECRET_NAMES, (
        f"Secrets referenced {sorted(referenced)}; README documents {sorted(SECRET_NAMES)}"
    )
    readme = (PROFILE / "README.md").read_text()
    for secret in sorted(SECRET_NAMES):
        assert secret in readme, f"README.md does not say how to create the Secret {secret}"


def test_the_secret_scan_finds_planted_secrets() -> None:
    """The scan above can fail: secrets planted where a careless edit would put them."""
    values = profile_yaml("values.yaml")
    values["dagster-user-deployments"]["deployments"][0]["env"]["PGPASSWORD"] = PLANTED_PASSWORD
    values["postgresql"]["postgresqlPassword"] = PLANTED_PASSWORD
    values["dagsterDaemon"]["env"]["PULSE_ALERT"] = "https://hooks.slack.com/services/T0/B0/x"
    values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"].append("OPENAI_API_KEY=sk-x")
    found = inline_secrets(values)
    assert "dagster-user-deployments.deployments[0].env.PGPASSWORD" in found
    assert "postgresql.postgresqlPassword" in found
    assert "dagsterDaemon.env.PULSE_ALERT" in found
    assert any(path.startswith("runLauncher.config.k8sRunLauncher.envVars[") for path in found)
