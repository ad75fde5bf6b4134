"""Retrodiction-shaped history for the rule rounds tests: real S&P 500 days and absolute
returns as the actuals, a 'model' that misses by planted biases on synthetic features (so
that the test knows which rule is right), and monthly round windows."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from pulse_assets.config import (
    RuleEvaluationConfig,
    RulesConfig,
    SymbolicRulesConfig,
)
from pulse_assets.training.rounds import RoundWindow

LABEL = "y"
FEATURES = ["busy_z", "calm_z", "noise_feature"]


def month(year: int, number: int) -> RoundWindow:
    start = date(year, number, 1)
    end = date(year + number // 12, number % 12 + 1, 1)
    return RoundWindow(start.isoformat(), start, end)


def months(first: RoundWindow, count: int) -> list[RoundWindow]:
    windows = [first]
    while len(windows) < count:
        windows.append(month(windows[-1].end.year, windows[-1].end.month))
    return windows


def history(
    real_raw_frames: dict[str, pl.DataFrame],
    *,
    persistent: float = 0.006,
    fading: float = 0.006,
    fades_on: date = date(2016, 1, 1),
    seed: int = 5,
) -> pl.DataFrame:
    """One out-of-sample row per trading day from 2014 on. The 'model' overshoots by
    ``persistent`` when ``busy_z > 1`` (all along) and by ``fading`` when ``calm_z > 1``
    before ``fades_on`` only; ``noise_feature`` carries nothing."""
    market = (
        real_raw_frames["market_prices"].filter(pl.col("date") >= date(2014, 1, 1)).sort("date")
    )
    rng = np.random.default_rng(seed)
    actual = np.abs(np.diff(np.log(market["close"].to_numpy()), prepend=np.nan))
    busy_z, calm_z = rng.normal(size=(2, len(actual)))
    dates = market["date"].to_numpy()
    before = dates < np.datetime64(fades_on)
    forecast = (
        actual
        + rng.normal(0, 0.002, size=len(actual))
        + np.where(busy_z > 1.0, persistent, 0.0)
        + np.where((calm_z > 1.0) & before, fading, 0.0)
    )
    frame = pl.DataFrame(
        {
            "date": market["date"],
            "in_sample": False,
            "model_version": "1",
            f"forecast_{LABEL}": forecast,
            f"actual_{LABEL}": actual,
            "busy_z": busy_z,
            "calm_z": calm_z,
            "noise_feature": rng.normal(size=len(actual)),
        }
    ).drop_nulls()
    return frame.filter(pl.col(f"actual_{LABEL}").is_not_nan()).with_columns(
        (pl.col(f"forecast_{LABEL}") - pl.col(f"actual_{LABEL}")).alias(f"error_{LABEL}")
    )


def config(**evaluation: object) -> RulesConfig:
    """Single-feature patterns only (clear rules to follow), fewer resamples for speed."""
    return RulesConfig(
        symbolic=SymbolicRulesConfig(max_pair_features=0),
        evaluation=RuleEvaluationConfig(**({"resamples": 400} | evaluation)),  # type: ignore[arg-type]
    )
