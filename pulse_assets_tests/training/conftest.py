"""A round world: the real 2015-2016 data of ``trained_world`` and a real MLflow sqlite registry
under the test's tmp folder, with helpers to run walk-forward rounds through the domain code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pulse_assets.config import RoundsConfig, Settings, TrainingConfig
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.registry import ModelRegistry
from pulse_assets.training.rounds import (
    RoundContext,
    RoundOutcome,
    RoundRecord,
    RoundWindow,
    run_round,
)
from pulse_assets.training.service import ModelCache


def month(key: str) -> RoundWindow:
    """The monthly round starting on ``key`` (a first day of a month)."""
    start = date.fromisoformat(key)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return RoundWindow(key, start, end)


@dataclass
class RoundWorld:
    settings: Settings
    registry: ModelRegistry
    tmp: Path
    features: pl.DataFrame
    labels: pl.DataFrame
    messages: list[str] = field(default_factory=list)

    def context(
        self,
        training: TrainingConfig | None = None,
        rounds: RoundsConfig | None = None,
        **overrides: Any,
    ) -> RoundContext:
        cache = ModelCache(self.registry)
        values: dict[str, Any] = {
            "training": training or self.settings.training,
            "rounds": rounds or self.settings.rounds,
            "registry": self.registry,
            "checkpoints_root": self.tmp / "checkpoints",
            "load": cache.load,
            "trigger": "manual",
            "run_id": "run-1",
            "log": self.messages.append,
        }
        return RoundContext(**(values | overrides))

    def run(
        self,
        key: str,
        previous: RoundRecord | None,
        context: RoundContext | None = None,
        cutoff: date | None = None,
    ) -> RoundOutcome:
        window = month(key)
        return run_round(
            context or self.context(),
            window,
            previous,
            self.features,
            self.labels,
            cutoff or window.start,
        )


def round_world_at(settings: Settings, folder: Path) -> RoundWorld:
    """A registry and audit under ``folder``; features and labels from ``settings``' store."""
    assert settings.store.root is not None, "the test settings name a store folder"
    store = PartitionStore(settings.store.root)
    registry = ModelRegistry(
        f"sqlite:///{folder / 'mlflow.db'}",
        "forecast_test",
        "exp-test",
        (folder / "artifacts").as_uri(),
        AliasAudit(connect(f"sqlite:///{folder / 'pulse.db'}")),
        retries=0,
    )
    return RoundWorld(
        settings,
        registry,
        folder,
        store.read_range("features/daily_features", "0000-00-00", "2016-12-31"),
        store.read_range("features/daily_labels", "0000-00-00", "2016-12-31"),
    )


@pytest.fixture
def round_world(trained_world: dict[str, Any], tmp_path: Path) -> RoundWorld:
    return round_world_at(trained_world["settings"], tmp_path)
