"""Forecast each day of a window as the model would have on that day, next to what happened.

Day t's forecast reads feature rows dated at or before t only (for a recurrent model, the
``lookback_rows`` rows ending at t). The actual is the label of day t (the next trading day's
value), null while that day is not ingested. The naive forecast is the label of the previous
trading day: the latest realized value on day t. Active rules then adjust the forecast
(``adjusted_<label>``), reading that day's features only.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.metrics.regression import metrics_with_naive
from pulse_assets.rules.language import Rule, apply_rules
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.trainer import forecast


def retrodict(
    module: ForecastModule,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: list[str],
    label_names: list[str],
    start: date,
    end: date,
    model_version: str,
    trained_through: date | None,
    rules: list[Rule] | None = None,
) -> pl.DataFrame:
    """One row per feature day in [start, end) with forecast, actual, error, naive and adjusted."""
    missing = [c for c in feature_names if c not in features.columns]
    if missing:
        raise TrainingDataError(
            f"model {model_version} needs feature column(s) {missing} that "
            "daily_features no longer has; retrain the model"
        )
    history = features.sort("date")
    made = forecast(module, history.select(feature_names).to_numpy().astype(np.float32))
    frame = (
        history.select("date")
        .slice(history.height - len(made))
        .with_columns(
            pl.Series(f"forecast_{name}", made[:, k].astype(np.float64))
            for k, name in enumerate(label_names)
        )
    )
    known = labels.sort("date").select(
        "date",
        *[pl.col(LABEL_PREFIX + n).alias(f"actual_{n}") for n in label_names],
        *[pl.col(LABEL_PREFIX + n).shift(1).alias(f"naive_{n}") for n in label_names],
    )
    frame = frame.join(known, on="date", how="left").filter(
        pl.col("date").is_between(start, end, closed="left")
    )
    in_sample = pl.lit(False) if trained_through is None else pl.col("date") <= trained_through
    frame = frame.with_columns(
        *[
            (pl.col(f"forecast_{n}") - pl.col(f"actual_{n}")).alias(f"error_{n}")
            for n in label_names
        ],
        *[
            (pl.col(f"naive_{n}") - pl.col(f"actual_{n}")).alias(f"naive_error_{n}")
            for n in label_names
        ],
        pl.lit(model_version).alias("model_version"),
        in_sample.alias("in_sample"),
    )
    return with_rules(frame, history, label_names, rules or [])


def with_rules(
    frame: pl.DataFrame, features: pl.DataFrame, label_names: list[str], rules: list[Rule]
) -> pl.DataFrame:
    """Add ``adjusted_<label>`` (the forecast with the rules applied, in order) and its error.

    Rule conditions read that day's feature row; with no rules the adjusted forecast is the
    forecast, so the columns are always there.
    """
    needed = sorted({name for rule in rules for name in rule.features()} - set(frame.columns))
    missing = [name for name in needed if name not in features.columns]
    if missing:
        raise TrainingDataError(
            f"active rule(s) read feature(s) {missing} that daily_features no longer has; "
            "retire those rules or restore the features"
        )
    joined = (
        frame.join(features.select("date", *needed), on="date", how="left") if needed else frame
    )
    adjusted = apply_rules(joined, rules).select(
        [*frame.columns, *[f"adjusted_{n}" for n in label_names]]
    )
    return adjusted.with_columns(
        (pl.col(f"adjusted_{n}") - pl.col(f"actual_{n}")).alias(f"adjusted_error_{n}")
        for n in label_names
    )


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
