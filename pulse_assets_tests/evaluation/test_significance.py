"""Diebold–Mariano: a published example, hand arithmetic, statsmodels' HAC, and real data."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from pulse_assets.evaluation.baselines import BaselineSettings, fit_baselines
from pulse_assets.evaluation.significance import (
    Alternative,
    Loss,
    SignificanceError,
    diebold_mariano,
)

CUTOFF = date(2016, 1, 1)


@pytest.fixture(scope="module")
def ewma_and_actual(real_raw_frames: dict[str, pl.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """The EWMA forecast of |r_{t+1}| over 2016-2017 and the realised |r_{t+1}|."""
    prices = real_raw_frames["market_prices"].sort("date")
    returns = prices.select("date", pl.col("close").log().diff().alias("log_return")).drop_nulls()
    fitted = fit_baselines(returns.filter(pl.col("date") < CUTOFF), BaselineSettings())
    span = returns.filter(pl.col("date") >= CUTOFF)
    rows = fitted.forecast(span).with_columns(actual=span["log_return"].abs().shift(-1))
    rows = rows.drop_nulls()
    return rows["ewma"].to_numpy(), rows["actual"].to_numpy()


def test_published_worked_example() -> None:
    """README of the ``dieboldmariano`` package (PyPI): dm_test(T, F, G, one_sided=True)
    gives (-2.2229922805746782, 0.04515565862099125).

    By hand: squared errors of F are 1,1,1,4,9 and of G 9,36,36,0,81, so d = -8,-35,-35,4,-72,
    d̄ = -29.2, γ0 = 3450.8/5 = 690.16, DM = -29.2/sqrt(690.16/5) = -2.48538, HLN factor
    sqrt((5+1-2)/5) = sqrt(0.8), statistic -2.22299.
    """
    actual = np.array([10, 20, 30, 40, 50.0])
    first = np.array([11, 21, 29, 42, 53.0])
    second = np.array([13, 26, 24, 40, 59.0])
    result = diebold_mariano(first - actual, second - actual, alternative=Alternative.LESS)
    assert result.statistic == pytest.approx(-2.2229922805746782, rel=1e-12)
    assert result.p_value == pytest.approx(0.04515565862099125, rel=1e-9)
    assert result.statistic == pytest.approx(-29.2 / math.sqrt(690.16 / 5) * math.sqrt(0.8))
    assert (result.mean_loss_difference, result.n) == (pytest.approx(-29.2), 5)
    two_sided = diebold_mariano(first - actual, second - actual)
    assert two_sided.p_value == pytest.approx(2 * 0.04515565862099125, rel=1e-9)


def test_hand_computed_example_at_horizon_two() -> None:
    """Absolute loss, second errors zero, so d = 1,3,2,5,4,6; n = 6, d̄ = 3.5.

    Centred: -2.5,-0.5,-1.5,1.5,0.5,2.5; γ0 = 17.5/6; γ1 = (1.25+0.75-2.25+0.75+1.25)/6 = 1.75/6.
    Bartlett weight of lag 1 at h = 2: 1/2, so V = (17.5 + 1.75)/6 = 19.25/6 and
    DM = 3.5/sqrt(19.25/36) = 21/sqrt(19.25). HLN: sqrt((6+1-4+2/6)/6) = sqrt(5/9).
    Statistic 7·sqrt(5/19.25) = 3.5675.
    """
    d = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    result = diebold_mariano(d, [0.0] * 6, loss=Loss.ABSOLUTE, horizon=2)
    expected = 7 * math.sqrt(5 / 19.25)
    assert result.statistic == pytest.approx(expected, rel=1e-12)
    assert result.statistic == pytest.approx(3.5675, abs=1e-4)
    assert result.p_value == pytest.approx(2 * stats.t.sf(expected, df=5), rel=1e-12)
    assert result.horizon == 2 and result.loss is Loss.ABSOLUTE


@pytest.mark.parametrize("horizon", [1, 2, 3, 5])
@pytest.mark.parametrize("loss", list(Loss))
def test_statistic_before_hln_is_statsmodels_hac_t_value(horizon: int, loss: Loss) -> None:
    """OLS of d on a constant, Newey–West covariance with maxlags h-1: the same t-statistic."""
    rng = np.random.default_rng(20 + horizon)
    n = 150
    noise = rng.standard_normal(n + horizon)
    first = np.convolve(noise, np.ones(horizon), mode="valid")[:n]  # MA(h-1) errors
    second = 1.1 * rng.standard_normal(n)
    d = first**2 - second**2 if loss is Loss.SQUARED else np.abs(first) - np.abs(second)
    hac = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": horizon - 1})
    hln = math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    result = diebold_mariano(first, second, loss=loss, horizon=horizon)
    assert result.statistic / hln == pytest.approx(float(hac.tvalues[0]), rel=1e-10)
    assert result.mean_loss_difference == pytest.approx(float(hac.params[0]), rel=1e-12)


def test_swapping_the_forecasts_mirrors_the_test() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(60), 1.3 * rng.standard_normal(60)
    forward = diebold_mariano(a, b, alternative=Alternative.LESS)
    backward = diebold_mariano(b, a, alternative=Alternative.GREATER)
    assert backward.statistic == pytest.approx(-forward.statistic)
    assert backward.p_value == pytest.approx(forward.p_value)
    assert forward.statistic < 0 and forward.p_value < 0.5


def test_a_good_forecast_beats_a_noisy_one_on_real_data(
    ewma_and_actual: tuple[np.ndarray, np.ndarray],
) -> None:
    """EWMA against EWMA with multiplicative noise (seed 7, lognormal σ 0.6), 2016-2017."""
    ewma, actual = ewma_and_actual
    noisy = ewma * np.exp(0.6 * np.random.default_rng(7).standard_normal(ewma.size))
    for loss in Loss:
        result = diebold_mariano(ewma - actual, noisy - actual, loss, alternative=Alternative.LESS)
        assert result.n == ewma.size > 480
        assert result.statistic < 0
        assert result.p_value < 0.01, (loss, result)


def test_two_equally_good_forecasts_are_not_told_apart_on_real_data(
    ewma_and_actual: tuple[np.ndarray, np.ndarray],
) -> None:
    """Two forecasts with independent noise of the same size: the null holds.

    Over 200 draws (seed 11) the two-sided p-values should look uniform: about 5% below 0.05
    and a mean near 0.5. The bounds (2%..9%, 0.42..0.58) are over 2 binomial/uniform standard
    errors wide, so a test that rejected too often or too rarely would fail.
    """
    ewma, actual = ewma_and_actual
    rng = np.random.default_rng(11)
    p_values = []
    for _ in range(200):
        a = ewma * np.exp(0.3 * rng.standard_normal(ewma.size))
        b = ewma * np.exp(0.3 * rng.standard_normal(ewma.size))
        p_values.append(diebold_mariano(a - actual, b - actual).p_value)
    rejected = float(np.mean(np.array(p_values) < 0.05))
    assert 0.02 <= rejected <= 0.09, rejected
    assert 0.42 <= float(np.mean(p_values)) <= 0.58


def test_identical_forecasts_have_statistic_zero() -> None:
    errors = [0.3, -0.1, 0.5, 0.2]
    two_sided = diebold_mariano(errors, errors)
    assert (two_sided.statistic, two_sided.p_value, two_sided.mean_loss_difference) == (
        0.0,
        1.0,
        0.0,
    )
    assert diebold_mariano(errors, errors, alternative=Alternative.LESS).p_value == 0.5


def test_undefined_tests_are_errors_that_say_why() -> None:
    with pytest.raises(SignificanceError, match="same loss every day"):
        diebold_mariano([2.0, -2.0, 2.0, 2.0], [1.0, 1.0, -1.0, 1.0])  # d = 3 every day
    with pytest.raises(SignificanceError, match="2 pairs .* too few .* at least 3"):
        diebold_mariano([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(SignificanceError, match="at horizon 3: it needs at least 7"):
        diebold_mariano(np.arange(6.0), np.zeros(6), horizon=3)
    with pytest.raises(SignificanceError, match="has 3 errors but the second has 4"):
        diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(SignificanceError, match="NaN/inf"):
        diebold_mariano([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(SignificanceError, match="horizon must be at least 1"):
        diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], horizon=0)
