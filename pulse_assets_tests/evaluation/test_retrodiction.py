"""Retrodiction reads only what was known on each day, and says who forecast it."""

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from pulse_assets.config import BaselineSettings, ModelConfig
from pulse_assets.evaluation.baselines import Baseline, fit_baselines
from pulse_assets.evaluation.retrodiction import (
    RETURN_COLUMN,
    Forecaster,
    VersionOfDay,
    abs_returns,
    forecast_days,
    retrodict_round,
)
from pulse_assets.storage import PartitionStore
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import Scaler
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.trainer import forecast, train
from pulse_assets_tests.training.train_worker import load_data

LABEL = "sp500_abs_return_next"
FORECAST = f"forecast_{LABEL}"
ROUND = (date(2016, 11, 1), date(2016, 12, 1))
SPLIT = date(2016, 11, 15)  # the champion changes hands on this day in the lookups below


@pytest.fixture(scope="module")
def module(
    trained_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> ForecastModule:
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    checkpoints = CheckpointStore(tmp_path_factory.mktemp("retro"), "r")
    return train(fit, valid, settings.training, checkpoints).module


@pytest.fixture(scope="module")
def frames(trained_world: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    store = PartitionStore(Path(trained_world["settings"].store.root))
    features = store.read_range("features/daily_features", "2015-06-01", "2016-12-31")
    labels = store.read_range("features/daily_labels", "2015-06-01", "2016-12-31")
    return features, labels


def test_day_t_is_forecast_from_features_up_to_t_only(module, frames):
    features, _ = frames
    start, end, t = date(2016, 10, 1), date(2017, 1, 1), date(2016, 11, 15)
    made = forecast_days(module, features, start, end)
    assert made.height == features.filter(pl.col("date") >= start).height
    names = list(module.feature_names)
    tampered = features.with_columns(
        pl.when(pl.col("date") > t).then(pl.col(c) * 10 + 3).otherwise(pl.col(c)).alias(c)
        for c in names
    )
    again = forecast_days(module, tampered, start, end)
    upto = pl.col("date") <= t
    assert made.filter(upto)[FORECAST].equals(again.filter(upto)[FORECAST])
    assert not made.filter(~upto)[FORECAST].equals(again.filter(~upto)[FORECAST])


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_a_span_is_forecast_as_from_the_whole_history_from_only_the_rows_it_needs(frames, kind):
    """forecast_days runs the model on the span's rows (and a recurrent model's look-back
    before it) only: the same forecasts as over all history, shuffled input included."""
    features, _ = frames
    names = [c for c in features.columns if c != "date"][:6]
    rows = features.drop_nulls(names).sort("date")
    x = rows.select(names).to_numpy().astype(np.float32)
    architecture = ModelConfig(kind=kind, hidden_sizes=[8, 4], lookback_rows=5, num_layers=1)
    torch.manual_seed(3)
    model = ForecastModule(
        architecture, Scaler.fit(x), Scaler.fit(x[:, :1]), tuple(names), (LABEL,)
    ).eval()
    whole = forecast(model, x)[:, 0]
    everything = (
        rows.select("date")
        .slice(rows.height - len(whole))
        .with_columns(pl.Series(FORECAST, whole.astype(np.float64)))
    )
    first, end = date(2016, 3, 1), date(2016, 4, 1)
    expected = everything.filter(pl.col("date") >= first, pl.col("date") < end)
    assert expected.height > 15
    for frame in (rows, rows.sample(fraction=1.0, shuffle=True, seed=1)):
        made = forecast_days(model, frame, first, end)
        assert made["date"].to_list() == expected["date"].to_list()
        assert np.allclose(made[FORECAST].to_numpy(), expected[FORECAST].to_numpy(), rtol=1e-6)


def test_abs_return_of_day_t_is_the_previous_days_label(frames):
    _, labels = frames
    returns = abs_returns(labels, LABEL)
    ordered = labels.sort("date")
    previous = dict(
        zip(
            ordered["date"].to_list()[1:],
            ordered[f"label_{LABEL}"].to_list()[:-1],
            strict=True,
        )
    )
    assert returns.height > 100
    for row in returns.iter_rows(named=True):
        assert row[RETURN_COLUMN] == previous[row["date"]]
    assert returns["date"].min() > ordered["date"].min()  # the first day has no previous label


def retrodict(
    frames: tuple[pl.DataFrame, pl.DataFrame],
    champion_of: VersionOfDay,
    challenger_of: VersionOfDay,
) -> pl.DataFrame:
    features, labels = frames
    returns = abs_returns(labels, LABEL).filter(pl.col("date") < ROUND[0])
    fitted = fit_baselines(returns, BaselineSettings())
    return retrodict_round(features, labels, LABEL, ROUND, champion_of, challenger_of, fitted)


def test_rows_are_out_of_sample_when_each_version_trained_before_its_days(module, frames):
    early = Forecaster("3", module, ROUND[0])
    later = Forecaster("4", module, SPLIT)
    shadow = Forecaster("5", module, ROUND[0])

    def champion_of(day: date) -> Forecaster:
        return early if day < SPLIT else later

    frame = retrodict(frames, champion_of, lambda day: shadow)
    trading_days = frames[1].filter(pl.col("date").is_between(*ROUND, closed="left")).height
    assert frame.height == trading_days > 15
    assert not frame["in_sample"].any()
    by_day = dict(zip(frame["date"], frame["model_version"], strict=True))
    assert {v for d, v in by_day.items() if d < SPLIT} == {"3"}
    assert {v for d, v in by_day.items() if d >= SPLIT} == {"4"}
    assert set(frame["challenger_version"]) == {"5"}
    assert frame[FORECAST].null_count() == 0 and frame[f"shadow_{LABEL}"].null_count() == 0
    for baseline in Baseline:
        assert frame[f"{baseline.value}_{LABEL}"].null_count() == 0, baseline
    assert (frame[f"error_{LABEL}"] == frame[FORECAST] - frame[f"actual_{LABEL}"]).all()


def test_rows_before_the_forecasting_versions_cutoff_are_in_sample(module, frames):
    """A version serving days it trained on (cutoff after them) is flagged, day by day."""
    late = Forecaster("7", module, SPLIT)
    frame = retrodict(frames, lambda day: late, lambda day: None)
    assert frame.filter(pl.col("date") < SPLIT)["in_sample"].all()
    assert not frame.filter(pl.col("date") >= SPLIT)["in_sample"].any()
    assert frame.filter(pl.col("date") < SPLIT).height > 5
    assert frame["challenger_version"].null_count() == frame.height  # no shadow that round


def test_days_without_a_champion_are_not_forecast(module, frames):
    served = Forecaster("3", module, ROUND[0])
    frame = retrodict(frames, lambda day: served if day >= SPLIT else None, lambda day: None)
    assert frame.height > 0 and frame.filter(pl.col("date") < SPLIT).height == 0
