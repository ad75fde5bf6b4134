"""Forecast-skill metrics of E|r| forecasts: by hand, and QLIKE's scaling by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pulse_assets.metrics.forecast_skill import (
    FORECAST_SKILL_NAMES,
    forecast_skill,
    qlike,
    variance_of_abs_forecast,
)
from pulse_assets.metrics.regression import MetricsError, regression_metrics

ACTUAL = [0.01, 0.0, 0.02]  # |r_{t+1}|, one day with an unchanged close
FORECAST = [0.012, 0.005, 0.015]
NAIVE = [0.0, 0.01, 0.0]


def test_qlike_by_hand() -> None:
    terms = []
    for y, f in zip(ACTUAL, FORECAST, strict=True):
        h = math.pi / 2 * f * f
        terms.append(math.log(h) + y * y / h)
    assert qlike(ACTUAL, FORECAST) == pytest.approx(sum(terms) / 3, rel=1e-12)
    assert variance_of_abs_forecast([0.02])[0] == pytest.approx(math.pi / 2 * 0.0004)


def test_forecast_skill_reuses_the_point_metrics_and_adds_qlike() -> None:
    skill = forecast_skill(ACTUAL, FORECAST, NAIVE)
    point = regression_metrics(ACTUAL, FORECAST, NAIVE)
    assert tuple(skill) == FORECAST_SKILL_NAMES
    assert (
        skill["rmse"]
        == point["rmse"]
        == pytest.approx(math.sqrt((0.002**2 + 0.005**2 + 0.005**2) / 3))
    )
    assert skill["mae"] == pytest.approx(0.004)
    naive_rmse = math.sqrt((0.01**2 + 0.01**2 + 0.02**2) / 3)
    assert skill["theil_u2"] == pytest.approx(skill["rmse"] / naive_rmse)
    assert skill["qlike"] == qlike(ACTUAL, FORECAST)


def test_qlike_of_a_forecaster_that_forecasts_zero_is_undefined_or_an_error() -> None:
    assert math.isnan(forecast_skill(ACTUAL, NAIVE, NAIVE)["qlike"])
    with pytest.raises(MetricsError, match=r"2 of 3 are zero or negative \(first at row 0"):
        qlike(ACTUAL, NAIVE)
    with pytest.raises(MetricsError, match="NaN/inf"):
        qlike([0.01, math.nan], [0.01, 0.02])


def test_the_true_abs_mean_minimises_qlike_for_normal_returns() -> None:
    """Returns N(0, σ_t²) with σ_t varying: f = sqrt(2/π)·σ scores best; 20% off either way
    scores worse. With h = f² instead, the upward-biased forecast would win (shown too)."""
    rng = np.random.default_rng(5)
    sigma = 0.01 * np.exp(0.5 * rng.standard_normal(200_000))
    actual = np.abs(sigma * rng.standard_normal(sigma.size))
    true = math.sqrt(2 / math.pi) * sigma
    scores = {scale: qlike(actual, scale * true) for scale in (0.8, 1.0, 1.25)}
    assert scores[1.0] < scores[0.8] and scores[1.0] < scores[1.25]

    def unscaled(forecast: np.ndarray) -> float:
        return float(np.mean(np.log(forecast**2) + actual**2 / forecast**2))

    assert unscaled(1.25 * true) < unscaled(true)
