"""Two forecasters' per-day losses compared: the difference, its interval and a test.

:func:`compare_metrics` is the plan's ``compare_metrics(base, candidate)``: the champion
against a baseline, or a walk-forward with the curriculum against the same walk-forward with
uniform weights. Each side is a ``date``/``loss`` frame of per-day losses (from
:func:`per_day_losses`), and only the days both sides scored are compared.

The difference is mean(candidate loss) - mean(base loss) over those days: negative means the
candidate's loss was lower. The test is the Diebold–Mariano test of
:mod:`pulse_assets.evaluation.significance` (Newey–West variance, HLN correction, t(n-1)) on
d_t = L(candidate)_t - L(base)_t. The interval is the one that test inverts:
d̄ ± t_{n-1} · sqrt(V̂/n) / HLN, so it excludes 0 exactly when the two-sided test rejects at
1 - confidence. A HAC interval rather than a bootstrap: it is the DM test's own uncertainty,
so the interval and the p-value can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl
from scipy import stats

from pulse_assets.evaluation.significance import (
    Alternative,
    DieboldMarianoResult,
    Loss,
    diebold_mariano,
    hln_factor,
    newey_west_variance,
)
from pulse_assets.metrics.forecast_skill import variance_of_abs_forecast
from pulse_assets.metrics.regression import MetricsError

DATE, LOSS = "date", "loss"


class DayLoss(StrEnum):
    """Loss of one day's forecast f against the actual y."""

    SQUARED = "squared"  # (f - y)²
    ABSOLUTE = "absolute"  # |f - y|
    QLIKE = "qlike"  # log h + y²/h with h = (π/2)·f², see metrics/forecast_skill.py


def per_day_losses(
    frame: pl.DataFrame, forecast: str, actual: str, loss: DayLoss = DayLoss.SQUARED
) -> pl.DataFrame:
    """``date`` and ``loss`` of column ``forecast`` against ``actual`` on the days both are
    known (a retrodiction frame's ``forecast_<label>``, ``garch_<label>``, ...)."""
    missing = [c for c in (DATE, forecast, actual) if c not in frame.columns]
    if missing:
        raise MetricsError(f"the frame lacks column(s) {missing}; it has {frame.columns}")
    known = frame.drop_nulls([forecast, actual]).sort(DATE)
    f = known.get_column(forecast).cast(pl.Float64).to_numpy()
    y = known.get_column(actual).cast(pl.Float64).to_numpy()
    if loss is DayLoss.SQUARED:
        values = (f - y) ** 2
    elif loss is DayLoss.ABSOLUTE:
        values = np.abs(f - y)
    else:
        if (f <= 0).any():
            raise MetricsError(
                f"QLIKE needs positive forecasts, but {int((f <= 0).sum())} of {forecast!r} "
                "are zero or negative; compare on squared or absolute loss instead"
            )
        variance = variance_of_abs_forecast(f)
        values = np.log(variance) + y**2 / variance
    return known.select(DATE).with_columns(pl.Series(LOSS, values, dtype=pl.Float64))


@dataclass(frozen=True)
class LossComparison:
    """A candidate's per-day losses against a base's over the days both scored."""

    days: int
    unmatched_days: int  # days only one side scored: left out, counted here
    base_mean_loss: float
    candidate_mean_loss: float
    difference: float  # candidate - base; negative: the candidate's loss was lower
    ci_low: float
    ci_high: float
    confidence: float
    loss_ratio: float  # candidate / base mean loss; NaN when the base's mean loss is 0
    dm_statistic: float  # negative: the candidate's loss was lower
    p_value: float  # two-sided: the two have equal expected loss
    p_value_candidate_better: float  # one-sided: the candidate's expected loss is lower
    horizon: int

    def verdict(self) -> str:
        """One sentence at the interval's level (1 - confidence)."""
        level = 1.0 - self.confidence
        if self.p_value >= level:
            return f"no significant difference (DM p = {self.p_value:.3g} >= {level:g})"
        better = "candidate" if self.difference < 0 else "base"
        return f"{better} better (DM p = {self.p_value:.3g} < {level:g})"


def _checked(frame: pl.DataFrame, role: str, loss: str) -> pl.DataFrame:
    missing = [c for c in (DATE, loss) if c not in frame.columns]
    if missing:
        raise MetricsError(
            f"the {role} losses lack column(s) {missing}; pass a frame with {DATE!r} and "
            f"{loss!r} (per_day_losses builds one)"
        )
    picked = frame.select(DATE, pl.col(loss).cast(pl.Float64).alias(LOSS))
    if picked.get_column(DATE).is_duplicated().any():
        raise MetricsError(f"the {role} losses have several rows for one date; one per day")
    values = picked.get_column(LOSS).to_numpy()
    if picked.get_column(DATE).null_count() or not np.isfinite(values).all():
        raise MetricsError(
            f"the {role} losses hold a null date or a NaN/inf/null loss; drop the days whose "
            "forecast or actual is unknown first"
        )
    return picked


def compare_metrics(
    base: pl.DataFrame,
    candidate: pl.DataFrame,
    *,
    loss: str = LOSS,
    horizon: int = 1,
    confidence: float = 0.95,
) -> LossComparison:
    """The candidate's per-day losses against the base's, aligned on ``date``.

    Both frames have ``date`` and a per-day loss column ``loss``. Days only one side scored
    are left out and counted in ``unmatched_days``; no common day is an error. The DM test
    raises :class:`~pulse_assets.evaluation.significance.SignificanceError` where it is
    undefined (too few days, a loss difference that is the same non-zero value every day).
    """
    if not 0.5 <= confidence < 1.0:
        raise MetricsError(f"confidence must be in [0.5, 1), got {confidence}")
    left, right = _checked(base, "base", loss), _checked(candidate, "candidate", loss)
    paired = left.join(right, on=DATE, how="inner", suffix="_candidate").sort(DATE)
    if paired.height == 0:
        raise MetricsError(
            f"the base ({left.height} days) and the candidate ({right.height} days) have no "
            "day in common; compare forecasts of the same days"
        )
    base_loss = paired.get_column(LOSS).to_numpy()
    candidate_loss = paired.get_column(f"{LOSS}_candidate").to_numpy()
    test = _dm_on_losses(candidate_loss, base_loss, horizon)
    one_sided = _dm_on_losses(candidate_loss, base_loss, horizon, Alternative.LESS)
    low, high = _hac_interval(candidate_loss - base_loss, horizon, confidence)
    base_mean = float(base_loss.mean())
    return LossComparison(
        days=paired.height,
        unmatched_days=left.height + right.height - 2 * paired.height,
        base_mean_loss=base_mean,
        candidate_mean_loss=float(candidate_loss.mean()),
        difference=float((candidate_loss - base_loss).mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        loss_ratio=float(candidate_loss.mean()) / base_mean if base_mean != 0 else math.nan,
        dm_statistic=test.statistic,
        p_value=test.p_value,
        p_value_candidate_better=one_sided.p_value,
        horizon=horizon,
    )


def _dm_on_losses(
    first: np.ndarray,
    second: np.ndarray,
    horizon: int,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> DieboldMarianoResult:
    """The DM test of the project on losses rather than errors: with absolute loss its
    differential is |a| - |b|, which is a - b for non-negative inputs, so both loss series are
    shifted by one constant that makes them non-negative (QLIKE can be negative); the
    difference of each day, and so the test, is unchanged."""
    shift = max(0.0, -float(min(first.min(), second.min())))
    return diebold_mariano(first + shift, second + shift, Loss.ABSOLUTE, horizon, alternative)


def _hac_interval(differential: np.ndarray, horizon: int, confidence: float) -> tuple[float, float]:
    """d̄ ± t_{n-1} · sqrt(V̂/n) / HLN: the interval the two-sided DM test inverts."""
    n = differential.size
    mean = float(differential.mean())
    if not differential.any():
        return 0.0, 0.0
    standard_error = math.sqrt(newey_west_variance(differential, horizon - 1) / n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * standard_error / hln_factor(n, horizon)
    return mean - half, mean + half
