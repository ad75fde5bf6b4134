"""Forecast each day of a round as the platform would have on that day, next to what happened.

Day t's forecast is made by the version that was champion on day t, from feature rows dated
at or before t (for a recurrent model, the ``lookback_rows`` rows ending at t). Beside it: the
challenger's shadow forecast (the version trained for this round, out of sample too), and the
field's standard baselines fitted on the returns known before the round (naive persistence,
trailing mean, EWMA, GARCH). The actual is the label of day t (the next trading day's value),
null while that day is not ingested. Rules adjust it downstream, in ``rules/rule_impact``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from pulse_assets.evaluation.baselines import FittedBaselines
from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.metrics.regression import metrics_with_naive
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.trainer import forecast

RETURN_COLUMN = "log_return"


def forecast_days(
    module: ForecastModule, features: pl.DataFrame, first: date, end: date
) -> pl.DataFrame:
    """``date`` and ``forecast_<label>`` for the feature days ``first <= t < end``, each made
    from rows dated at or before t only: the model sees those days and, for a recurrent
    model, the ``lookback_rows - 1`` rows before the first, not the whole history."""
    missing = [c for c in module.feature_names if c not in features.columns]
    if missing:
        raise TrainingDataError(
            f"the model needs feature column(s) {missing} that daily_features no longer has; "
            "retrain it (materialize models/forecast_model for the latest round)"
        )
    history = features if features.get_column("date").is_sorted() else features.sort("date")
    dates = history.get_column("date")
    first_row, end_row = (dates.search_sorted(day, side="left") for day in (first, end))
    start = max(first_row - max(module.lookback_rows - 1, 0), 0)
    history = history.slice(start, max(end_row - start, 0))
    matrix = history.select(module.feature_names).to_numpy().astype(np.float32)
    made = forecast(module, matrix) if len(matrix) >= max(module.lookback_rows, 1) else None
    if made is None:
        return pl.DataFrame(
            schema={"date": pl.Date, **{f"forecast_{n}": pl.Float64 for n in module.label_names}}
        )
    frame = history.select("date").slice(history.height - len(made))
    frame = frame.with_columns(
        pl.Series(f"forecast_{name}", made[:, k].astype(np.float64))
        for k, name in enumerate(module.label_names)
    )
    return frame.filter(pl.col("date") >= first)


def abs_returns(labels: pl.DataFrame, label: str) -> pl.DataFrame:
    """|r_t| known on day t: the label of the previous trading day (|log return| of t over
    t-1), as the ``date``/``log_return`` frame the baselines read."""
    return (
        labels.sort("date")
        .select("date", pl.col(LABEL_PREFIX + label).shift(1).alias(RETURN_COLUMN))
        .drop_nulls()
    )


@dataclass(frozen=True)
class Forecaster:
    """A version in service on some days: who forecast them, and until when it trained."""

    version: str
    module: ForecastModule
    cutoff: date


VersionOfDay = Callable[[date], Forecaster | None]


def _by_version(
    days: Sequence[date], version_of: VersionOfDay, features: pl.DataFrame, label: str
) -> pl.DataFrame:
    """Forecasts of each day by the version in service on it: date, version, cutoff, forecast."""
    groups: dict[str, tuple[Forecaster, list[date]]] = {}
    for day in days:
        serving = version_of(day)
        if serving is not None:
            groups.setdefault(serving.version, (serving, []))[1].append(day)
    parts = [
        forecast_days(serving.module, features, min(chosen), max(chosen) + timedelta(days=1))
        .filter(pl.col("date").is_in(chosen))
        .select(
            "date",
            pl.lit(serving.version).alias("version"),
            pl.lit(serving.cutoff).alias("cutoff"),
            pl.col(f"forecast_{label}").alias("forecast"),
        )
        for serving, chosen in groups.values()
    ]
    empty = pl.DataFrame(
        schema={"date": pl.Date, "version": pl.String, "cutoff": pl.Date, "forecast": pl.Float64}
    )
    return pl.concat([empty, *parts]).sort("date")


def retrodict_round(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    label: str,
    days: tuple[date, date],
    champion_of: VersionOfDay,
    challenger_of: VersionOfDay,
    baselines: FittedBaselines,
    uniform_twin_of: VersionOfDay | None = None,
) -> pl.DataFrame:
    """One row per trading day ``days[0] <= t < days[1]``: the champion of the day's forecast
    (``forecast_<label>``, ``model_version``), the challenger's shadow forecast
    (``shadow_<label>``, ``challenger_version``; null when the challenger is the champion),
    every baseline (``<baseline>_<label>``), the actual and the errors. With
    ``uniform_twin_of``, ``uniform_twin_<label>`` is the forecast of the challenger in service
    as trained without its curriculum (null where none was kept): the curriculum's effect is
    the challenger's loss against it. ``in_sample`` says whether day t was inside the forecasting
    champion's training (before its cutoff); rows made this way are never in sample."""
    start, end = days
    spine = labels.filter(pl.col("date").is_between(start, end, closed="left")).sort("date")
    dates = spine.get_column("date").to_list()
    champion = _by_version(dates, champion_of, features, label)
    shadow = _by_version(dates, challenger_of, features, label).select(
        "date",
        pl.col("version").alias("challenger_version"),
        pl.col("forecast").alias(f"shadow_{label}"),
    )
    twin = (
        _by_version(dates, uniform_twin_of, features, label).select(
            "date", pl.col("forecast").alias(f"uniform_twin_{label}")
        )
        if uniform_twin_of is not None
        else None
    )
    returns = abs_returns(labels, label).filter(
        pl.col("date").is_between(start, end, closed="left")
    )
    standard = baselines.forecast(returns).rename(
        lambda name: name if name == "date" else f"{name}_{label}"
    )
    actual = pl.col(f"actual_{label}")
    frame = (
        spine.select("date", pl.col(LABEL_PREFIX + label).alias(f"actual_{label}"))
        .join(
            champion.select(
                "date",
                pl.col("version").alias("model_version"),
                pl.col("forecast").alias(f"forecast_{label}"),
                (pl.col("date") < pl.col("cutoff")).alias("in_sample"),
            ),
            on="date",
            how="inner",
        )
        .join(shadow, on="date", how="left")
        .join(standard, on="date", how="left")
        .with_columns(
            (pl.col(f"forecast_{label}") - actual).alias(f"error_{label}"),
            (pl.col(f"naive_{label}") - actual).alias(f"naive_error_{label}"),
        )
    )
    return frame if twin is None else frame.join(twin, on="date", how="left")


def window_metrics(
    frame: pl.DataFrame, label_names: list[str], forecast_prefix: str = "forecast"
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of ``<prefix>_<label>`` and of the naive forecast, over rows where all are known."""
    scores = {}
    for name in label_names:
        known = frame.drop_nulls([f"actual_{name}", f"naive_{name}", f"{forecast_prefix}_{name}"])
        if known.height:
            scores[name] = metrics_with_naive(
                known[f"actual_{name}"], known[f"{forecast_prefix}_{name}"], known[f"naive_{name}"]
            )
    return scores
