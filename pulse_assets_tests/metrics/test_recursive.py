"""Symbolic alignment and trust delta on small hand-made series, checked against hand values."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from pulse_assets.metrics.recursive import (
    RecursiveMetricsSettings,
    round_skill,
    squared_losses,
    symbolic_alignment,
    trust_delta,
)
from pulse_assets.metrics.regression import MetricsError

DAYS = [date(2016, 7, 1) + timedelta(days=n) for n in range(6)]


def impact(fired, forecast, adjusted, actual) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": DAYS[: len(fired)],
            "round": ["2016-07-01"] * len(fired),
            "active_rule_ids": ["r1,r2"] * len(fired),
            "rules_fired": fired,
            "forecast_x": forecast,
            "adjusted_x": adjusted,
            "actual_x": actual,
        },
        schema_overrides={"rules_fired": pl.Int64, "actual_x": pl.Float64},
    )


def test_symbolic_alignment_by_hand() -> None:
    frame = impact(
        fired=[1, 2, 1, 0, 1, 1],
        forecast=[2.0, 1.0, 5.0, 1.0, 3.0, 4.0],
        adjusted=[1.0, 3.0, 6.0, 1.0, 2.0, 4.5],
        # toward (|1-0| < |2-0|), unchanged (1 = 1), away (2 > 1), not fired, unresolved,
        # toward (0.5 < 1)
        actual=[0.0, 2.0, 4.0, 9.0, None, 5.0],
    )
    aligned = symbolic_alignment(frame, "x")
    assert (aligned.fired_days, aligned.toward_days, aligned.away_days) == (4, 2, 1)
    assert (aligned.unchanged_days, aligned.unresolved_days) == (1, 1)
    assert aligned.share_toward == 0.5
    # forecast errors 2, -1, 1, -1 and adjusted errors 1, 1, 2, -0.5 on the four fired days
    assert aligned.rmse_forecast == pytest.approx(math.sqrt(7 / 4), rel=1e-12)
    assert aligned.rmse_adjusted == pytest.approx(1.25, rel=1e-12)
    assert aligned.rmse_change == pytest.approx(1.25 - math.sqrt(7 / 4), rel=1e-12)
    assert "toward the actual on 2, away on 1" in aligned.outcome


def test_no_rule_firing_says_so_rather_than_nan() -> None:
    frame = impact([0, 0, 1], [1.0, 2.0, 3.0], [1.0, 2.0, 2.0], [1.5, 2.5, None])
    aligned = symbolic_alignment(frame, "x")
    assert aligned.fired_days == 0 and aligned.unresolved_days == 1
    assert aligned.share_toward is None and aligned.rmse_change is None
    assert aligned.outcome.startswith("no active rule fired on a day whose actual is known")
    assert "1 fired day(s) await their actual" in aligned.outcome


def test_a_non_finite_adjusted_forecast_on_a_fired_day_is_an_error() -> None:
    frame = impact([1, 1], [1.0, 2.0], [float("nan"), 2.0], [1.0, 2.0])
    with pytest.raises(MetricsError, match="NaN/inf on a day a rule fired"):
        symbolic_alignment(frame, "x")
    with pytest.raises(MetricsError, match="lacks column"):
        symbolic_alignment(frame.drop("adjusted_x"), "x")


def losses(champion, naive, ewma) -> pl.DataFrame:
    return pl.DataFrame({"champion": champion, "naive": naive, "ewma": ewma}, schema_overrides={})


# previous round: champion MSE 2, best baseline naive (MSE 4, ewma 5): skill 1 - 2/4 = 0.5
PREVIOUS = losses([1.0, 3.0, 1.0, 3.0, 2.0], [4.0, 4.0, 2.0, 6.0, 4.0], [5.0] * 5)
# current round: champion MSE 1.5, best baseline ewma (MSE 2, naive 3): skill 1 - 1.5/2 = 0.25
CURRENT = losses([2.0, 1.0, 2.0, 1.0, 1.5], [3.0] * 5, [2.0, 3.0, 1.0, 2.5, 1.5])
SMALL = RecursiveMetricsSettings(block_days=2, resamples=500)


def test_trust_delta_point_value_by_hand() -> None:
    result = trust_delta(PREVIOUS, CURRENT, baselines=("naive", "ewma"), settings=SMALL)
    assert result.previous.best_baseline == "naive" and result.previous.skill == 0.5
    assert result.current.best_baseline == "ewma" and result.current.skill == 0.25
    assert result.delta == -0.25
    assert result.ci_low < -0.25 < result.ci_high, (result.ci_low, result.ci_high)
    again = trust_delta(PREVIOUS, CURRENT, baselines=("naive", "ewma"), settings=SMALL)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high), "seeded: same draws"


def simulated(days: int, seed: int, champion_scale: float) -> pl.DataFrame:
    """Squared errors of a champion and two baselines over ``days`` days."""
    rng = np.random.default_rng(seed)
    errors = rng.standard_normal((days, 3)) * np.array([champion_scale, 1.0, 1.1])
    return losses(errors[:, 0] ** 2, errors[:, 1] ** 2, errors[:, 2] ** 2)


def test_trust_delta_interval_contains_it_and_shrinks_with_more_days() -> None:
    widths = []
    for days in (20, 80, 320):
        previous, current = simulated(days, 1, 0.9), simulated(days, 2, 0.8)
        result = trust_delta(previous, current, baselines=("naive", "ewma"))
        skills = [round_skill(f, baselines=("naive", "ewma")).skill for f in (previous, current)]
        assert result.delta == pytest.approx(skills[1] - skills[0], rel=1e-12)
        assert result.ci_low < result.delta < result.ci_high, (days, result)
        widths.append(result.ci_high - result.ci_low)
    assert widths[0] > widths[1] > widths[2], f"the interval did not shrink with days: {widths}"
    assert widths[2] < widths[0] / 2.5, widths  # about 1/sqrt(days): 4x the days, half the width


def test_trust_delta_refuses_rounds_it_cannot_measure() -> None:
    with pytest.raises(MetricsError, match="fewer than min_days = 5"):
        trust_delta(PREVIOUS.head(3), CURRENT, baselines=("naive", "ewma"))
    zero = CURRENT.with_columns(pl.lit(0.0).alias("ewma"))
    with pytest.raises(MetricsError, match="zero loss on all 5 days"):
        trust_delta(PREVIOUS, zero, baselines=("naive", "ewma"))
    with pytest.raises(MetricsError, match="lacks column"):
        trust_delta(PREVIOUS, CURRENT)  # the default baselines include trailing_mean, garch


def test_squared_losses_keep_the_days_every_forecaster_and_the_actual_are_known() -> None:
    frame = pl.DataFrame(
        {
            "date": DAYS[:3],
            "actual_x": [1.0, 2.0, None],
            "forecast_x": [1.5, 1.0, 1.0],
            "shadow_x": [None, None, None],
            "naive_x": [0.0, 2.0, 1.0],
            "trailing_mean_x": [1.0, 3.0, 1.0],
            "ewma_x": [2.0, 2.5, 1.0],
            "garch_x": [1.0, None, 1.0],
        },
        schema_overrides={"shadow_x": pl.Float64},
    )
    table = squared_losses(frame, "x")
    assert table.columns == ["date", "champion", "naive", "trailing_mean", "ewma", "garch"]
    assert table.rows() == [(DAYS[0], 0.25, 1.0, 0.0, 1.0, 0.0)]
