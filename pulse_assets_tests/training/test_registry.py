"""The registry on MLflow's real SQLite store, driven by real training rounds."""

import socket

import pytest

from pulse_assets.config import Settings
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.orchestrator import run_training
from pulse_assets.training.promotion import decide
from pulse_assets.training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    ModelVersionInfo,
    TrackingError,
    lineage,
    lineage_markdown,
)


@pytest.fixture
def world(trained_world, tmp_path):
    settings: Settings = trained_world["settings"]
    engine = connect(f"sqlite:///{tmp_path / 'pulse.db'}")
    registry = ModelRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "forecast_test",
        "exp-test",
        (tmp_path / "artifacts").as_uri(),
        AliasAudit(engine),
        retries=0,
    )
    return settings, registry, MetricsStore(engine), tmp_path


def one_round(settings, registry, metrics, tmp_path, config=None, trigger="manual", drifted=None):
    return run_training(
        config=config or settings.training,
        store=PartitionStore(settings.store.root),
        registry=registry,
        metrics=metrics,
        checkpoints_root=tmp_path / "ck",
        trigger=trigger,
        run_id="run-1",
        drifted_features=drifted,
        log=lambda m: None,
    )


def test_rounds_register_versions_with_aliases_tags_lineage_and_audit(world):
    settings, registry, metrics, tmp_path = world
    first = one_round(settings, registry, metrics, tmp_path)
    assert first.version == "1" and first.decision.promote
    assert registry.alias(CHAMPION).version == "1" and registry.alias(CHALLENGER).version == "1"

    strict = settings.training.model_copy(
        update={
            "promotion": settings.training.promotion.model_copy(update={"min_improvement": 0.99}),
            "optimizer": settings.training.optimizer.model_copy(update={"seed": 11}),
        }
    )
    second = one_round(
        settings,
        registry,
        metrics,
        tmp_path,
        config=strict,
        trigger="drift",
        drifted=["sp500_volume_z"],
    )
    assert second.version == "2" and second.parent_version == "1"
    assert not second.decision.promote and "does not beat champion" in second.decision.reason
    assert registry.alias(CHAMPION).version == "1" and registry.alias(CHALLENGER).version == "2"

    tags = registry.version("2").tags
    assert tags["parent_version"] == "1" and tags["trigger"] == "drift"
    assert tags["drifted_features"] == "sp500_volume_z" and tags["dagster_run_id"] == "run-1"
    assert tags["partition_range"] == second.window.partition_range()
    assert "features/daily_features=" in tags["data_versions"]
    assert tags["challenger.by"] == "pulse-assets (drift)" and "figures" in "".join(tags)

    events = registry.audit.history("forecast_test")
    assert [(e.alias, e.from_version, e.to_version) for e in events] == [
        (CHALLENGER, None, "1"),
        (CHAMPION, None, "1"),
        (CHALLENGER, "1", "2"),
    ]
    assert events[1].reason == "first model: no champion to beat"
    assert events[2].figures["champion"] == pytest.approx(
        second.champion_holdout["sp500_abs_return_next"]["model"]["rmse"]
    )

    assert lineage(registry.versions(), "2") == {"ancestors": ["1"], "descendants": []}
    assert "| 1 | ancestor | manual | champion |" in lineage_markdown(registry.versions(), "2")

    run = registry.client.get_run(registry.version("2").run_id)
    assert run.data.params["model.kind"] == "gru"
    history = registry.client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [r.epoch for r in second.result.history]
    assert run.inputs.dataset_inputs[0].dataset.name.startswith("daily_features[")
    loaded = registry.load("2")
    assert loaded.feature_names == second.result.module.feature_names

    stored = metrics.history("forecast_test", "2", "holdout")
    assert {r.metric for r in stored} >= {"rmse", "mae", "theil_u2"}


def test_a_failed_training_never_moves_champion(world):
    settings, registry, metrics, tmp_path = world
    one_round(settings, registry, metrics, tmp_path)
    impossible = settings.training.model_copy(update={"min_rows": 100_000})
    with pytest.raises(TrainingDataError, match="too few rows to train"):
        one_round(settings, registry, metrics, tmp_path, config=impossible)
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
