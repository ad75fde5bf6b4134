"""compare_metrics: the difference by hand, the DM test's verdicts, its interval's coherence."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from pulse_assets.evaluation.significance import Loss, diebold_mariano
from pulse_assets.metrics.comparison import DayLoss, compare_metrics, per_day_losses
from pulse_assets.metrics.regression import MetricsError

START = date(2016, 1, 1)


def series(values, first: int = 0) -> pl.DataFrame:
    days = [START + timedelta(days=first + n) for n in range(len(values))]
    return pl.DataFrame({"date": days, "loss": np.asarray(values, dtype=np.float64)})


def test_difference_and_ratio_by_hand() -> None:
    result = compare_metrics(series([1.0, 2.0, 3.0, 4.0]), series([0.5, 1.0, 2.0, 3.0]))
    assert result.days == 4 and result.unmatched_days == 0
    assert result.base_mean_loss == 2.5 and result.candidate_mean_loss == 1.625
    assert result.difference == -0.875
    assert result.loss_ratio == pytest.approx(0.65, rel=1e-12)
    assert result.ci_low < result.difference < result.ci_high


def test_a_clearly_better_candidate_is_significant() -> None:
    rng = np.random.default_rng(4)
    base_errors, candidate_errors = 2.0 * rng.standard_normal(250), rng.standard_normal(250)
    result = compare_metrics(series(base_errors**2), series(candidate_errors**2))
    assert result.difference < 0 and result.dm_statistic < 0
    assert result.p_value < 0.001 and result.p_value_candidate_better < 0.001
    assert result.ci_high < 0
    assert result.verdict().startswith("candidate better")


def test_identical_series_are_not_different() -> None:
    losses = series(np.random.default_rng(5).standard_normal(60) ** 2)
    result = compare_metrics(losses, losses)
    assert result.difference == 0.0 and result.dm_statistic == 0.0
    assert result.p_value == 1.0 and (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.verdict().startswith("no significant difference")


def test_it_is_the_projects_dm_test_on_the_losses() -> None:
    rng = np.random.default_rng(6)
    base_errors, candidate_errors = rng.standard_normal(80), 0.9 * rng.standard_normal(80)
    for loss, horizon in ((Loss.SQUARED, 1), (Loss.ABSOLUTE, 3)):
        per_day = (lambda e: e**2) if loss is Loss.SQUARED else np.abs
        result = compare_metrics(
            series(per_day(base_errors)), series(per_day(candidate_errors)), horizon=horizon
        )
        reference = diebold_mariano(candidate_errors, base_errors, loss, horizon)
        assert result.dm_statistic == pytest.approx(reference.statistic, rel=1e-10)
        assert result.p_value == pytest.approx(reference.p_value, rel=1e-10)


def test_the_interval_excludes_zero_exactly_when_the_test_rejects() -> None:
    verdicts = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        base, candidate = rng.standard_normal(40) ** 2, (0.8 * rng.standard_normal(40)) ** 2
        result = compare_metrics(series(base), series(candidate), confidence=0.9)
        rejects = result.p_value < 0.1
        assert (result.ci_high < 0 or result.ci_low > 0) == rejects, (seed, result)
        verdicts.add(rejects)
    assert verdicts == {True, False}, "the seeds should give both outcomes; pick others"


def test_negative_losses_such_as_qlike_compare_by_their_differences() -> None:
    rng = np.random.default_rng(7)
    base, candidate = rng.standard_normal(50), rng.standard_normal(50) - 0.3
    shifted = compare_metrics(series(base - 10.0), series(candidate - 10.0))
    plain = compare_metrics(series(base + 10.0), series(candidate + 10.0))
    assert shifted.dm_statistic == pytest.approx(plain.dm_statistic, rel=1e-9)
    assert shifted.difference == pytest.approx(plain.difference, rel=1e-9)


def test_only_common_days_are_compared_and_the_others_are_counted() -> None:
    result = compare_metrics(
        series([1.0, 2.0, 3.0, 4.0, 5.0]), series([1.0, 1.0, 1.0, 1.0, 1.0], 1)
    )
    assert result.days == 4 and result.unmatched_days == 2
    assert result.base_mean_loss == 3.5  # days 2..5 of the base
    with pytest.raises(MetricsError, match="no day in common"):
        compare_metrics(series([1.0, 2.0]), series([1.0, 2.0], 5))
    twice = pl.concat([series([1.0, 2.0]), series([3.0])])
    with pytest.raises(MetricsError, match="several rows for one date"):
        compare_metrics(twice, series([1.0, 2.0]))
    with pytest.raises(MetricsError, match="NaN/inf/null"):
        compare_metrics(series([1.0, float("nan"), 2.0]), series([1.0, 2.0, 3.0]))


def test_per_day_losses_by_hand() -> None:
    frame = pl.DataFrame(
        {
            "date": [START, START + timedelta(days=1), START + timedelta(days=2)],
            "forecast_x": [0.02, 0.01, 0.03],
            "actual_x": [0.01, None, 0.0],
        }
    )
    squared = per_day_losses(frame, "forecast_x", "actual_x")
    assert squared["loss"].to_list() == pytest.approx([0.0001, 0.0009], rel=1e-12)
    absolute = per_day_losses(frame, "forecast_x", "actual_x", DayLoss.ABSOLUTE)
    assert absolute["loss"].to_list() == pytest.approx([0.01, 0.03], rel=1e-12)
    qlike = per_day_losses(frame, "forecast_x", "actual_x", DayLoss.QLIKE)
    h = [math.pi / 2 * 0.02**2, math.pi / 2 * 0.03**2]
    expected = [math.log(h[0]) + 0.01**2 / h[0], math.log(h[1])]
    assert qlike["loss"].to_list() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(MetricsError, match="positive forecasts"):
        per_day_losses(
            frame.with_columns(pl.lit(0.0).alias("forecast_x")),
            "forecast_x",
            "actual_x",
            DayLoss.QLIKE,
        )
