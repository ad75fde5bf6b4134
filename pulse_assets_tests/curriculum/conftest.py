"""Hand-made worlds for the curriculum: a few trading days, a feature or two, and champions
that forecast a constant (real ``ForecastModule`` objects with their weights set by hand), so
every error and score can be computed by hand."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from pulse_assets.config import CurriculumSettings, ModelConfig, TrainingConfig
from pulse_assets.training.dataset import Scaler
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.rounds import RoundRecord
from pulse_assets_tests.training.conftest import RoundWorld, round_world_at


def constant_model(value: float, features: tuple[str, ...] = ("vol",)) -> ForecastModule:
    """An MLP whose output layer is zero with bias ``value``: it forecasts ``value`` always."""
    unit = Scaler(np.zeros(len(features), np.float32), np.ones(len(features), np.float32))
    module = ForecastModule(
        ModelConfig(kind="mlp", hidden_sizes=[2], dropout=0.0),
        unit,
        Scaler(np.zeros(1, np.float32), np.ones(1, np.float32)),
        features,
        ("y",),
    )
    last = module.core.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)
    return module.eval()


def record(round_start: date, champion: str, **overrides: Any) -> RoundRecord:
    """A round record with the fields the curriculum reads (start, champion) and plausible rest."""
    values: dict[str, Any] = {
        "round": round_start.isoformat(),
        "start": round_start,
        "cutoff": round_start,
        "champion": champion,
        "challenger": champion,
        "challenger_cutoff": round_start,
        "promoted": False,
        "decision": "by hand",
        "shadow_days": 0,
        "shadow_champion_rmse": None,
        "shadow_challenger_rmse": None,
        "dm_statistic": None,
        "dm_p_value": None,
        "trained": True,
        "duplicate_of": None,
        "training_id": "t",
        "train_first": round_start,
        "train_last": round_start,
        "train_rows": 0,
        "epochs_run": 0,
        "train_seconds": 0.0,
        "warm_start_from": None,
    }
    return RoundRecord(**(values | overrides))


def training_config(window_days: int = 120) -> TrainingConfig:
    return TrainingConfig(labels=["y"], features=["vol"], window_days=window_days, min_rows=10)


def settings(**overrides: Any) -> CurriculumSettings:
    """One regime descriptor (mean of ``vol``), no shrinkage, two quantile bins."""
    values: dict[str, Any] = {
        "regimes": {"volatility": {"column": "vol", "stat": "mean"}},
        "analysis_features": ["vol"],
        "quantiles": 2,
        "shrinkage_days": 0,
        "min_error_days": 4,
        "edge_quantile": 0.2,
        "novelty_neighbours": 1,
    }
    return CurriculumSettings.model_validate(values | overrides)


def two_months() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Four January and four February trading days (plus Feb 7, whose label resolves on the
    cutoff Feb 10): vol 0,0,1,1 | 2,2,3,3 and label 1 in January, 2 in February."""
    days = [date(2020, 1, d) for d in (6, 7, 8, 9)] + [date(2020, 2, d) for d in (3, 4, 5, 6, 7)]
    features = pl.DataFrame({"date": days, "vol": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]})
    labels = pl.DataFrame({"date": days, "label_y": [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 9.0]})
    return features, labels


# The curriculum's regime descriptors over the small test pipeline's columns
# (pulse_assets_tests/conftest.py SMALL_FEATURE_STEPS); the default config names the full
# pipeline's columns.


@pytest.fixture
def round_world(trained_world: dict[str, Any], tmp_path: Path) -> RoundWorld:
    """Real 2015-2016 data and a real MLflow registry under tmp (see training/conftest.py)."""
    return round_world_at(trained_world["settings"], tmp_path)
