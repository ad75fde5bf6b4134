"""The registry on MLflow's real SQLite store, driven by real training rounds."""

import json
import os
import pickle
import socket
import sqlite3
import sys
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import torch

from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.model_files import WEIGHTS_FILE, ModelFileError
from pulse_assets.training.promotion import decide
from pulse_assets.training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    ModelVersionInfo,
    TrackingError,
    VersionTags,
    lineage,
    lineage_markdown,
)
from pulse_assets_tests.training.conftest import RoundWorld
from pulse_assets_tests.training.payload import Payload, is_live

UNPICKLED: list[str] = []
RECORDING = [False]


def _record_unpickling(event: str, args: tuple) -> None:
    if event == "pickle.find_class" and RECORDING[0]:
        UNPICKLED.append(f"{args[0]}.{args[1]}")


sys.addaudithook(_record_unpickling)


def test_rounds_register_versions_with_aliases_tags_lineage_and_audit(round_world: RoundWorld):
    world, registry = round_world, round_world.registry
    first = world.run("2016-07-01", None)
    assert first.record.challenger == "1" and first.record.champion == "1"
    assert first.record.decision == "first model: no champion to beat"
    assert registry.alias(CHAMPION).version == "1" and registry.alias(CHALLENGER).version == "1"

    drift = world.context(trigger="drift", drifted_features=("sp500_volume_z",))
    second = world.run("2016-08-01", first.record, drift)
    assert second.record.challenger == "2" and second.record.champion == "1"
    assert second.record.warm_start_from == "1" and second.record.trained

    promotion = world.settings.training.promotion.model_copy(update={"min_improvement": 0.99})
    strict = world.settings.training.model_copy(update={"promotion": promotion})
    third = world.run("2016-09-01", second.record, world.context(training=strict))
    assert third.record.challenger == "3" and third.record.champion == "1"
    assert not third.record.promoted and third.record.shadow_days >= 5
    assert "not promoted" in third.record.decision
    assert "does not beat champion" in third.record.decision
    assert registry.alias(CHAMPION).version == "1" and registry.alias(CHALLENGER).version == "3"

    tags = VersionTags.of(registry.version("2"))
    assert tags.parent_version == "1" and tags.warm_start_from == "1"
    assert tags.trigger == "drift" and tags.drifted_features == ("sp500_volume_z",)
    assert tags.round == "2016-08-01" and tags.cutoff == date(2016, 8, 1)
    assert tags.train_last < date(2016, 8, 1) and tags.dagster_run_id == "run-1"
    assert tags.training_id == second.record.training_id and tags.data_versions
    raw = registry.version("2").tags
    move = json.loads(raw["challenger.move"])
    assert move["by"] == "pulse-assets (drift)" and move["as_of"] == "2016-08-01"
    assert raw["challenger.reason"] == "trained for round 2016-08-01"

    events = registry.audit.history("forecast_test")
    assert [(e.alias, e.from_version, e.to_version, e.as_of) for e in events] == [
        (CHAMPION, None, "1", date(2016, 7, 1)),
        (CHALLENGER, None, "1", date(2016, 7, 1)),
        (CHAMPION, "1", "1", date(2016, 8, 1)),
        (CHALLENGER, "1", "2", date(2016, 8, 1)),
        (CHAMPION, "1", "1", date(2016, 9, 1)),
        (CHALLENGER, "2", "3", date(2016, 9, 1)),
    ]
    assert events[0].reason == "first model: no champion to beat"
    assert events[4].reason == third.record.decision
    assert events[4].figures["challenger_rmse"] == pytest.approx(
        third.record.shadow_challenger_rmse
    )
    assert events[4].figures["shadow_days"] == third.record.shadow_days

    assert lineage(registry.versions(), "2") == {"ancestors": ["1"], "descendants": []}
    assert lineage(registry.versions(), "1") == {"ancestors": [], "descendants": ["2", "3"]}
    assert "| 1 | ancestor | manual | champion |" in lineage_markdown(registry.versions(), "2")

    run = registry.client.get_run(registry.version("2").run_id)
    assert run.data.params["model.kind"] == "gru" and run.data.params["round"] == "2016-08-01"
    assert run.data.params["epochs"] == str(world.settings.rounds.warm_start_epochs)
    history = registry.client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [r.epoch for r in second.result.history]
    assert run.inputs.dataset_inputs[0].dataset.name.startswith("daily_features[")
    loaded = registry.load("2")
    assert loaded.feature_names == second.challenger_module.feature_names
    trained, stored = second.challenger_module.state_dict(), loaded.state_dict()
    assert trained.keys() == stored.keys()
    assert all(torch.equal(trained[k], stored[k]) for k in trained)

    [listed] = registry.client.search_model_versions("name='forecast_test' and version_number=2")
    assert listed.source == f"{run.info.artifact_uri}/model" and listed.run_id == run.info.run_id
    assert listed.tags["training_id"] == second.record.training_id and listed.status == "READY"
    aliases = registry.client.get_registered_model("forecast_test").aliases
    assert {alias: str(number) for alias, number in aliases.items()} == {
        CHAMPION: "1",
        CHALLENGER: "3",
    }
    files = {f.path for f in registry.client.list_artifacts(run.info.run_id, "model")}
    assert files == {"model/model.json", "model/weights.safetensors"}

    # version 3 is not judged yet: its run and version carry the description they were
    # created with, and the round's log line says what the round did
    described = registry.client.get_model_version("forecast_test", "3").description
    assert described.startswith("Challenger of round 2016-09-01 (manual): trained on ")
    newest = registry.client.get_run(registry.version("3").run_id)
    assert newest.info.run_name == "manual-2016-09-01"
    assert newest.data.tags["mlflow.note.content"] == described
    assert third.record.summary().startswith("champion v1 (kept); challenger v3 trained on ")
    assert f"warm from v1, {third.record.epochs_run} epochs" in third.record.summary()


def test_a_local_tracking_store_runs_in_wal_mode_and_sends_no_telemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    audit = AliasAudit(connect(f"sqlite:///{tmp_path / 'pulse.db'}"))
    ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "m", "e", tmp_path.as_uri(), audit)
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the operator's choice stands
    ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "m", "e", tmp_path.as_uri(), audit)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_a_failed_training_never_moves_champion(round_world: RoundWorld):
    first = round_world.run("2016-07-01", None)
    impossible = round_world.settings.training.model_copy(update={"min_rows": 100_000})
    with pytest.raises(TrainingDataError, match="too few rows to train"):
        round_world.run("2016-08-01", first.record, round_world.context(training=impossible))
    registry = round_world.registry
    assert registry.alias(CHAMPION).version == "1"
    assert len(registry.audit.history("forecast_test")) == 2
    assert [v.version for v in registry.versions()] == ["1"]


def test_an_unreachable_tracking_server_fails_clearly_after_retries(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = ModelRegistry(
        f"http://127.0.0.1:{port}",
        "m",
        "e",
        tmp_path.as_uri(),
        AliasAudit(connect(f"sqlite:///{tmp_path / 'a.db'}")),
        retries=1,
        timeout_s=2,
    )
    with pytest.raises(
        TrackingError,
        match=rf"127\.0\.0\.1:{port} is unreachable \(get alias champion, 2 attempts\)",
    ):
        registry.alias(CHAMPION)


def test_lineage_walks_ancestors_and_descendants_iteratively():
    versions = [
        ModelVersionInfo(str(n), "r", {"parent_version": p}, ())
        for n, p in [(1, ""), (2, "1"), (3, "2"), (4, "2"), (5, "4")]
    ]
    assert lineage(versions, "4") == {"ancestors": ["2", "1"], "descendants": ["5"]}
    assert lineage(versions, "1") == {"ancestors": [], "descendants": ["2", "3", "4", "5"]}


def test_promotion_rule():
    assert decide("rmse", 1.0, None, 0.0).promote
    assert decide("rmse", 0.97, 1.0, 0.02).promote
    refused = decide("rmse", 0.99, 1.0, 0.02)
    assert not refused.promote and refused.figures["relative_improvement"] == pytest.approx(0.01)


def source_folder(registry: ModelRegistry, version: str) -> Path:
    return Path(
        urlparse(registry.client.get_model_version(registry.model_name, version).source).path
    )


def test_loading_a_version_unpickles_nothing(round_world: RoundWorld, monkeypatch):
    round_world.run("2016-07-01", None)
    registry = round_world.registry
    RECORDING[0] = True
    try:
        pickle.loads(pickle.dumps(Path("x")))
        assert UNPICKLED == ["pathlib.PosixPath"], "the audit hook does not see unpickling"
        UNPICKLED.clear()

        def refuse(*args, **kwargs):
            raise AssertionError("torch.load or mlflow.pytorch called while loading a model")

        monkeypatch.setattr(torch, "load", refuse)
        monkeypatch.setattr(mlflow.pytorch, "load_model", refuse)
        module = registry.load("1")
    finally:
        RECORDING[0] = False
    assert UNPICKLED == [] and module.label_names == ("sp500_abs_return_next",)


def test_a_pickle_planted_in_the_artifact_store_is_refused_not_run(round_world: RoundWorld):
    round_world.run("2016-07-01", None)
    registry = round_world.registry
    marker = round_world.tmp / "marker"
    weights = source_folder(registry, "1") / WEIGHTS_FILE
    weights.write_bytes(pickle.dumps(Payload(marker)))
    assert is_live(weights, marker, "pickle"), "the payload is not live"
    with pytest.raises(
        ModelFileError,
        match=r"version 1 of model forecast_test .*weights\.safetensors is not a safetensors file",
    ):
        registry.load("1")
    assert not marker.exists()


def test_a_version_in_the_old_pickled_format_is_refused_not_run(
    round_world: RoundWorld, monkeypatch: pytest.MonkeyPatch
):
    """What ``mlflow.pytorch.log_model(serialization_format="pickle")`` wrote, with a payload."""
    registry, tmp_path = round_world.registry, round_world.tmp
    marker, old = tmp_path / "marker", tmp_path / "old_format"
    (old / "data").mkdir(parents=True)
    (old / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n")
    torch.save(Payload(marker), old / "data" / "model.pth")
    assert is_live(old / "data" / "model.pth", marker, "torch"), "the payload is not live"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)  # restored after the test
    mlflow.set_tracking_uri(registry.tracking_uri)
    with mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        mlflow.log_artifacts(str(old), artifact_path="model")
    registry.client.create_registered_model(registry.model_name)
    registry.client.create_model_version(
        registry.model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    with pytest.raises(
        ModelFileError,
        match=r"has no model\.json, weights\.safetensors \(it holds \['MLmodel', 'data'\]\).*"
        r"earlier releases pickled models",
    ):
        registry.load("1")
    assert not marker.exists()


def test_logging_leaves_no_tracking_uri_behind_for_later_registries(
    round_world: RoundWorld, monkeypatch: pytest.MonkeyPatch
):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which outranks the configured URI:
    a registry that logged must not send every later one in the process to its own server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    round_world.registry.log_report("leak-check", {"x": 1.0}, [])
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    round_world.registry.log_report("leak-check", {"x": 1.0}, [])
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
