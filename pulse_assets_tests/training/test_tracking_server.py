"""The registry against a real MLflow tracking server: ``mlflow server`` on 127.0.0.1, started
here, its backend store a fresh PostgreSQL database, the alias audit in another. Rounds and a
promotion go through it; a server killed between training and the alias move fails clearly
after the configured retries and leaves the champion and the audit as they were."""

from __future__ import annotations

import copy
import json
import time
import traceback
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import mlflow
import psycopg
import pytest
import torch

from pulse_assets.config import Settings, artifacts_uri, sql_url, tracking_uri
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    ModelVersionInfo,
    TrackingError,
    VersionTags,
)
from pulse_assets.training.service import ModelCache
from pulse_assets_tests.mlflow_server import MlflowServer, mlflow_server
from pulse_assets_tests.ports import free_port
from pulse_assets_tests.postgres import fresh_database
from pulse_assets_tests.s3_server import ACCESS_KEY_ID, PLANTED_SECRET, REGION, moto_server
from pulse_assets_tests.training.conftest import RoundWorld

SERVED = "mlflow-artifacts:/pulse"  # experiments keep artifacts on the server (proxied)
PASSWORD = "pulse-planted-mlflow-password-51c0e9"
URI_PASSWORD = "pulse-planted-uri-password-8d27aa"
ROUND_KEYS = ("2016-07-01", "2016-08-01", "2016-09-01")


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    with fresh_database("pulse_mlflow") as url:
        yield url


@pytest.fixture(scope="module")
def audit_url() -> Iterator[str]:
    with fresh_database("pulse_sql") as url:
        yield url


@pytest.fixture(scope="module")
def server_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow_server")


@pytest.fixture(scope="module")
def module_server(backend: str, server_folder: Path) -> Iterator[MlflowServer]:
    """One server for the module, artifacts on its local disk; a test may kill and restart it."""
    with mlflow_server(
        backend, str(server_folder / "artifacts"), server_folder / "server.log"
    ) as running:
        yield running


@pytest.fixture
def server(module_server: MlflowServer) -> MlflowServer:
    """The module's server, up (again, if a test killed it and failed before its restart)."""
    if module_server.process is None:
        module_server.start()
    return module_server


@pytest.fixture(autouse=True)
def no_tracking_uri_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def server_settings(
    world: dict[str, Any], audit: str, model_name: str, uri: str | None
) -> Settings:
    """The test world's settings, a small MLP, the registry on the server (``uri``, or null
    for MLFLOW_TRACKING_URI) with served artifacts, and the audit on PostgreSQL."""
    raw = copy.deepcopy(world["raw"])
    raw["sql"] = {"url": audit}
    raw["training"]["model"] = {"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0}
    raw["training"]["tracking"] = {
        "uri": uri,
        "artifacts_uri": SERVED,
        "model_name": model_name,
        "experiment": f"{model_name}-experiment",
        "retries": 2,
        "timeout_s": 5,
    }
    return Settings.model_validate(raw)


def registry_for(settings: Settings, kind: type[ModelRegistry] = ModelRegistry) -> ModelRegistry:
    """The registry as the code location builds it, from the settings alone."""
    tracking = settings.training.tracking
    return kind(
        tracking_uri(settings),
        tracking.model_name,
        tracking.experiment,
        artifacts_uri(settings),
        AliasAudit(connect(sql_url(settings))),
        retries=tracking.retries,
        timeout_s=tracking.timeout_s,
    )


def round_world(settings: Settings, registry: ModelRegistry, tmp: Path) -> RoundWorld:
    assert settings.store.root is not None
    store = PartitionStore(settings.store.root)
    features = store.read_range("features/daily_features", "0000-00-00", "2016-12-31")
    labels = store.read_range("features/daily_labels", "0000-00-00", "2016-12-31")
    return RoundWorld(settings, registry, tmp, features, labels)


def worse_version_1(registry: ModelRegistry) -> Any:
    """A loader whose version 1 forecasts one label deviation too high: the challenger that
    replaces it is then certain to win on the shadow days (a promotion, deterministically)."""
    cache = ModelCache(registry)

    def load(version: str) -> ForecastModule:
        module = cache.load(version)
        if version != "1":
            return module
        worse = copy.deepcopy(module)
        with torch.no_grad():
            worse.y_mean += worse.y_std
        return worse

    return load


def backend_rows(backend: str, model_name: str) -> tuple[list[int], dict[str, int]]:
    """Versions and aliases as the server's PostgreSQL backend holds them."""
    with psycopg.connect(backend.replace("postgresql+psycopg://", "postgresql://")) as db:
        versions = db.execute(
            "SELECT version FROM model_versions WHERE name = %s ORDER BY version", (model_name,)
        ).fetchall()
        aliases = db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = %s", (model_name,)
        ).fetchall()
    return [row[0] for row in versions], {alias: version for alias, version in aliases}


def holder(registry: ModelRegistry, alias: str) -> str:
    found = registry.alias(alias)
    assert found is not None, f"no version of {registry.model_name} has the alias {alias}"
    return found.version


def same_weights(a: ForecastModule, b: ForecastModule) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_rounds_and_a_promotion_through_the_server(
    server: MlflowServer,
    backend: str,
    audit_url: str,
    server_folder: Path,
    trained_world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)  # how a deployment points at it
    settings = server_settings(trained_world, audit_url, "served_rounds", uri=None)
    registry = registry_for(settings)
    assert registry.tracking_uri == server.url
    world = round_world(settings, registry, tmp_path)

    first = world.run(ROUND_KEYS[0], None)
    second = world.run(ROUND_KEYS[1], first.record)
    third = world.run(ROUND_KEYS[2], second.record, world.context(load=worse_version_1(registry)))
    assert (first.record.champion, first.record.challenger) == ("1", "1")
    assert (second.record.champion, second.record.challenger) == ("1", "2")
    assert third.record.promoted, f"version 2 should have replaced 1: {third.record.decision}"
    assert (third.record.champion, third.record.challenger) == ("2", "3")

    # an independent client of the server sees what the rounds did
    client = mlflow.MlflowClient(server.url)
    aliases = client.get_registered_model("served_rounds").aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {CHAMPION: "2", CHALLENGER: "3"}
    assert backend_rows(backend, "served_rounds") == ([1, 2, 3], {CHAMPION: 2, CHALLENGER: 3})
    for record, outcome in zip(ROUND_KEYS, (first, second, third), strict=True):
        info = registry.version(outcome.record.challenger)
        assert info.run_id is not None
        tags = VersionTags.of(info)
        assert tags.round == record and tags.training_id == outcome.record.training_id
        run = client.get_run(info.run_id)
        assert run.info.run_name == f"manual-{record}"
        assert run.data.params["model.kind"] == "mlp"
        files = {f.path for f in client.list_artifacts(info.run_id, "model")}
        assert files == {"model/model.json", "model/weights.safetensors"}
        source = str(client.get_model_version("served_rounds", info.version).source)
        assert source.startswith(f"{SERVED}/served_rounds-experiment/{info.run_id}/")
        on_server = server_folder / "artifacts" / source.removeprefix("mlflow-artifacts:/")
        assert (on_server / "weights.safetensors").is_file(), f"{on_server} not on the server"
        assert same_weights(registry.load(info.version), outcome.challenger_module)

    promoted = registry.version("2").tags
    assert promoted["champion.reason"] == third.record.decision
    assert json.loads(promoted["champion.move"])["as_of"] == ROUND_KEYS[2]
    events = registry.audit.history("served_rounds", CHAMPION)
    assert [(e.from_version, e.to_version, e.as_of) for e in events] == [
        (None, "1", date(2016, 7, 1)),
        ("1", "1", date(2016, 8, 1)),
        ("1", "2", date(2016, 9, 1)),
    ]


class KillsServerAfterRegistering(ModelRegistry):
    """The real registry. Right after a round has registered its new version, described
    (the last tracking call before the alias moves), the server is killed: the outage lands
    exactly between training and the alias move."""

    server: MlflowServer | None = None
    killed_at: float = 0.0

    def log_training(self, *args: Any, **kwargs: Any) -> ModelVersionInfo:
        info = super().log_training(*args, **kwargs)
        if self.server is not None:
            self.server.stop()
            self.killed_at = time.monotonic()
            self.server = None
        return info


def test_a_server_gone_before_the_alias_move_fails_clearly_and_moves_nothing(
    server: MlflowServer, audit_url: str, trained_world: dict[str, Any], tmp_path: Path
):
    settings = server_settings(trained_world, audit_url, "outage", uri=server.url)
    registry = registry_for(settings, KillsServerAfterRegistering)
    assert isinstance(registry, KillsServerAfterRegistering)
    world = round_world(settings, registry, tmp_path)
    first = world.run(ROUND_KEYS[0], None)
    second = world.run(ROUND_KEYS[1], first.record)
    before = registry.audit.history("outage")
    assert len(before) == 4

    registry.server = server
    retries = settings.training.tracking.retries
    backoff = sum(0.5 * 2**attempt for attempt in range(retries))
    with pytest.raises(TrackingError) as failed:
        world.run(ROUND_KEYS[2], second.record, world.context(load=worse_version_1(registry)))
    elapsed = time.monotonic() - registry.killed_at
    assert registry.killed_at, "the round never reached the point where the server is killed"
    message = str(failed.value)
    assert message.startswith(
        f"MLflow tracking server at {server.url} is unreachable "
        f"(get alias champion, {retries + 1} attempts)"
    ), message
    assert "Start the server" in message
    limit = backoff + (retries + 1) * settings.training.tracking.timeout_s
    assert backoff <= elapsed < limit, (
        f"{elapsed:.1f}s: {retries} retries take {backoff}s..{limit}s"
    )

    server.start()  # the same backend and port: what the server had committed is back
    after = registry_for(settings)
    assert holder(after, CHAMPION) == "1", "the champion moved although the move failed"
    assert holder(after, CHALLENGER) == "2"
    assert [v.version for v in after.versions()] == ["1", "2", "3"]  # 3 was registered
    assert not {"champion.move", "champion.reason"} & after.version("2").tags.keys()
    assert after.audit.history("outage") == before, "the audit recorded a move that never was"

    again = round_world(settings, after, tmp_path)
    third = again.run(ROUND_KEYS[2], second.record, again.context(load=worse_version_1(after)))
    assert not third.record.trained and third.record.duplicate_of == "3"
    assert third.record.promoted and holder(after, CHAMPION) == "2"
    moves = [(e.alias, e.from_version, e.to_version) for e in after.audit.history("outage")[4:]]
    assert moves == [(CHAMPION, "1", "2"), (CHALLENGER, "2", "3")]


def assert_secret_absent(error: BaseException, secret: str, caplog: pytest.LogCaptureFixture):
    text = "".join(traceback.format_exception(error))  # the message and its whole cause chain
    assert secret not in text, f"the planted password is in the error:\n{text}"
    leaked = [r.getMessage() for r in caplog.records if secret in r.getMessage()]
    assert not leaked, f"the planted password was logged: {leaked[:3]}"


def test_tracking_errors_never_show_the_password(
    server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    def registry(uri: str) -> ModelRegistry:
        audit = AliasAudit(connect(f"sqlite:///{tmp_path / 'pulse.db'}"))
        return ModelRegistry(uri, "secrets", "secrets", SERVED, audit, retries=1, timeout_s=2)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pulse")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    closed = free_port()
    in_uri = f"http://pulse:{URI_PASSWORD}@127.0.0.1"
    for uri, secret in [
        (server.url, PASSWORD),
        (f"http://127.0.0.1:{closed}", PASSWORD),
        (f"{in_uri}:{server.port}", URI_PASSWORD),
        (f"{in_uri}:{closed}", URI_PASSWORD),
    ]:
        down = str(closed) in uri
        with pytest.raises(TrackingError, match="unreachable" if down else "get version") as raised:
            registry(uri).version("404")  # no such model: the server answers with an error
        assert_secret_absent(raised.value, secret, caplog)
        shown = "pulse:***@127.0.0.1" if secret == URI_PASSWORD else "http://127.0.0.1"
        assert shown in str(raised.value), f"the message must name the server: {raised.value}"


def test_model_files_on_s3_behind_the_server(
    backend: str, audit_url: str, trained_world: dict[str, Any], tmp_path: Path
):
    """``--artifacts-destination s3://...`` on moto's server: the round's files land in the
    bucket and load back through the tracking server; the client holds no S3 credentials."""
    with moto_server() as s3:
        credentials = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        bucket = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=PLANTED_SECRET,
        )
        bucket.create_bucket(Bucket="pulse-mlflow")
        environment = credentials | {"MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
        destination = "s3://pulse-mlflow/served"
        with mlflow_server(backend, destination, tmp_path / "s3.log", environment) as server:
            settings = server_settings(trained_world, audit_url, "on_s3", uri=server.url)
            registry = registry_for(settings)
            first = round_world(settings, registry, tmp_path).run(ROUND_KEYS[0], None)
            info = registry.version(first.record.challenger)
            source = str(registry.client.get_model_version("on_s3", info.version).source)
            key = f"served/{source.removeprefix('mlflow-artifacts:/')}"
            listed = bucket.list_objects_v2(Bucket="pulse-mlflow", Prefix=key)
            names = sorted(Path(item["Key"]).name for item in listed.get("Contents", []))
            assert names == ["model.json", "weights.safetensors"], f"{key}: {names}"
            assert same_weights(registry.load(info.version), first.challenger_module)
            assert holder(registry, CHAMPION) == info.version
