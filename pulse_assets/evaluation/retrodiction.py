"""Forecast each day of a window as the model would have on that day, next to what happened.

Day t's forecast reads feature rows dated at or before t only (for a recurrent model, the
``lookback_rows`` rows ending at t). The actual is the label of day t (the next trading day's
value), null while that day is not ingested. The naive forecast is the label of the previous
trading day: the latest realized value on day t.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import polars as pl

from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.metrics.regression import metrics_with_naive
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.trainer import forecast


def retrodict(
    module: Any,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: list[str],
    label_names: list[str],
    start: date,
    end: date,
    model_version: str,
    trained_through: date | None,
) -> pl.DataFrame:
    """One row per feature day in [start, end) with forecast, actual, error and naive per label."""
    missing = [c for c in feature_names if c not in features.columns]
    if missing:
        raise TrainingDataError(
            f"model {model_version} needs feature column(s) {missing} that "
            "daily_features no longer has; retrain the model"
        )
    history = features.sort("date")
    made = forecast(module, history.select(feature_names).to_numpy().astype(np.float32))
    offset = history.height - len(made)
    frame = (
        history.select("date")
        .slice(offset)
        .with_columns(
            pl.Series(f"forecast_{name}", made[:, k].astype(np.float64))
            for k, name in enumerate(label_names)
        )
    )
    label_columns = [LABEL_PREFIX + name for name in label_names]
    known = labels.sort("date").select(
        "date",
        *[pl.col(c).alias(f"actual_{c[len(LABEL_PREFIX) :]}") for c in label_columns],
        *[pl.col(c).shift(1).alias(f"naive_{c[len(LABEL_PREFIX) :]}") for c in label_columns],
    )
    frame = frame.join(known, on="date", how="left").filter(
        pl.col("date").is_between(start, end, closed="left")
    )
    in_sample = pl.lit(False) if trained_through is None else pl.col("date") <= trained_through
    return frame.with_columns(
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


def window_metrics(
    frame: pl.DataFrame, label_names: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Model and naive metrics per label over rows whose actual and naive values are known."""
    scores = {}
    for name in label_names:
        known = frame.drop_nulls([f"actual_{name}", f"naive_{name}", f"forecast_{name}"])
        if known.height:
            scores[name] = metrics_with_naive(
                known[f"actual_{name}"], known[f"forecast_{name}"], known[f"naive_{name}"]
            )
    return scores
