"""Baselines on real S&P 500 returns: against reference implementations, and point in time.

The fit window is 2014-2015 (returns before the cutoff), the span 2016-2017 (the round's days).
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from arch import arch_model
from pydantic import ValidationError
from scipy import integrate, stats

from pulse_assets.evaluation.baselines import (
    Baseline,
    BaselineError,
    BaselineSettings,
    FittedBaselines,
    fit_baselines,
    student_t_abs_mean,
)

CUTOFF = date(2016, 1, 1)
COLUMNS = [b.value for b in Baseline]


@pytest.fixture(scope="module")
def returns(real_raw_frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Daily log returns of the S&P 500 close, 2014-2017."""
    prices = real_raw_frames["market_prices"].sort("date")
    return prices.select("date", pl.col("close").log().diff().alias("log_return")).drop_nulls()


@pytest.fixture(scope="module")
def history(returns: pl.DataFrame) -> pl.DataFrame:
    return returns.filter(pl.col("date") < CUTOFF)


@pytest.fixture(scope="module")
def span(returns: pl.DataFrame) -> pl.DataFrame:
    return returns.filter(pl.col("date") >= CUTOFF)


@pytest.fixture(scope="module")
def fitted(history: pl.DataFrame) -> FittedBaselines:
    return fit_baselines(history, BaselineSettings())


@pytest.fixture(scope="module")
def forecasts(fitted: FittedBaselines, span: pl.DataFrame) -> pl.DataFrame:
    return fitted.forecast(span)


def synthetic(values: np.ndarray, start: date = date(2010, 1, 4)) -> pl.DataFrame:
    days = [start + timedelta(days=i) for i in range(values.size)]
    return pl.DataFrame({"date": days, "log_return": values})


def test_forecast_rows_are_the_span_days_with_one_column_per_baseline(
    forecasts: pl.DataFrame, span: pl.DataFrame
) -> None:
    assert forecasts.columns == ["date", *COLUMNS]
    assert forecasts["date"].to_list() == span["date"].to_list()
    assert all(forecasts[c].is_finite().all() for c in COLUMNS)
    assert all((forecasts[c] > 0).all() for c in ("trailing_mean", "ewma", "garch"))
    assert forecasts["naive"].min() == 0.0  # 2017's one day whose close did not change


def test_naive_and_trailing_mean_by_hand(forecasts: pl.DataFrame, returns: pl.DataFrame) -> None:
    absolute = returns["log_return"].abs().to_numpy()
    first_span = returns["date"].to_list().index(forecasts["date"][0])
    for row in (0, 7, 250, forecasts.height - 1):
        t = first_span + row
        assert forecasts["naive"][row] == absolute[t]
        assert forecasts["trailing_mean"][row] == pytest.approx(
            sum(absolute[t - 19 : t + 1]) / 20, rel=1e-12
        )


@pytest.mark.parametrize("fit_rows", [30, None])
def test_ewma_matches_a_plain_loop(
    fit_rows: int | None, history: pl.DataFrame, span: pl.DataFrame
) -> None:
    """From σ² = mean r² of the fit window, through it and the span; with 30 fit rows the
    start still weighs 0.94^30 ≈ 16% on the first forecast, so a wrong start would show."""
    window = history if fit_rows is None else history.tail(fit_rows)
    forecasts = fit_baselines(window, BaselineSettings()).forecast(span)
    lam = 0.94
    variance = sum(r * r for r in window["log_return"]) / window.height
    for r in window["log_return"]:
        variance = lam * variance + (1 - lam) * r * r
    expected = []
    for r in span["log_return"]:
        variance = lam * variance + (1 - lam) * r * r
        expected.append(math.sqrt(2 / math.pi) * math.sqrt(variance))
    np.testing.assert_allclose(forecasts["ewma"].to_numpy(), expected, rtol=1e-12)


def test_garch_parameters_are_arch_s_fit_on_the_fit_window(
    fitted: FittedBaselines, history: pl.DataFrame
) -> None:
    direct = arch_model(
        history["log_return"].to_numpy() * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t"
    ).fit(disp="off")
    garch_fit = fitted.fits[-1]
    assert garch_fit.method_used == "garch" and garch_fit.fallback_reason is None
    assert garch_fit.params == pytest.approx(
        {
            "omega": direct.params["omega"],
            "alpha": direct.params["alpha[1]"],
            "beta": direct.params["beta[1]"],
            "nu": direct.params["nu"],
        },
        rel=1e-12,
    )
    assert 0.5 < garch_fit.params["alpha"] + garch_fit.params["beta"] < 1


def test_garch_forecasts_are_arch_s_volatility_with_the_fitted_parameters(
    fitted: FittedBaselines, forecasts: pl.DataFrame, returns: pl.DataFrame, history: pl.DataFrame
) -> None:
    """arch itself filters the whole series with the fit window's parameters, not re-fitted."""
    assert fitted.garch is not None
    p = fitted.garch.params
    model = arch_model(
        returns["log_return"].to_numpy() * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t"
    )
    fixed = model.fix([p.omega, p.alpha, p.beta, p.nu])
    one_step = fixed.forecast(horizon=1, start=history.height, reindex=False)
    arch_sigma = np.sqrt(one_step.variance.to_numpy()[:, 0]) / 100
    ours = forecasts["garch"].to_numpy() / student_t_abs_mean(p.nu)
    np.testing.assert_allclose(ours, arch_sigma, rtol=1e-9)
    # the same numbers as arch's conditional volatility of the next day
    next_day_sigma = fixed.conditional_volatility[history.height + 1 :] / 100
    np.testing.assert_allclose(ours[:-1], next_day_sigma, rtol=1e-9)


@pytest.mark.parametrize("nu", [2.05, 2.5, 3.0, 4.2, 6.1, 10.0, 30.0, 200.0])
def test_student_t_abs_mean_matches_numerical_integration(nu: float) -> None:
    scale = math.sqrt((nu - 2) / nu)  # a standard t times this has variance 1
    assert stats.t.var(nu, scale=scale) == pytest.approx(1.0, rel=1e-12)
    abs_mean, _ = integrate.quad(lambda z: abs(z) * stats.t.pdf(z, nu, scale=scale), 0, np.inf)
    assert student_t_abs_mean(nu) == pytest.approx(2 * abs_mean, rel=1e-8)


def test_student_t_abs_mean_tends_to_the_normal_and_needs_a_variance() -> None:
    assert student_t_abs_mean(1e7) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-6)
    assert student_t_abs_mean(5.0) < math.sqrt(2 / math.pi)  # fat tails: more mass near 0
    with pytest.raises(BaselineError, match="ν > 2"):
        student_t_abs_mean(2.0)


@pytest.mark.parametrize("column", COLUMNS)
def test_changing_returns_after_day_t_leaves_day_t_unchanged(
    column: str, fitted: FittedBaselines, forecasts: pl.DataFrame, span: pl.DataFrame
) -> None:
    t = 120
    tampered = span.with_columns(
        pl.when(pl.int_range(pl.len()) > t)
        .then(-5 * pl.col("log_return") - 0.01)
        .otherwise(pl.col("log_return"))
        .alias("log_return")
    )
    again = fitted.forecast(tampered)[column].to_numpy()
    original = forecasts[column].to_numpy()
    np.testing.assert_array_equal(again[: t + 1], original[: t + 1])
    assert again[t + 1] != original[t + 1]  # the tamper reached the next day's forecast


def test_a_span_that_reaches_into_the_fit_window_is_refused(
    fitted: FittedBaselines, returns: pl.DataFrame
) -> None:
    with pytest.raises(BaselineError, match="not after the fit window's last day 2015-12-31"):
        fitted.forecast(returns.filter(pl.col("date") >= date(2015, 12, 1)))


def test_forecasts_from_absolute_returns_equal_those_from_signed_returns(
    history: pl.DataFrame, span: pl.DataFrame, forecasts: pl.DataFrame
) -> None:
    absolute = pl.col("log_return").abs()
    fitted = fit_baselines(history.with_columns(absolute), BaselineSettings())
    again = fitted.forecast(span.with_columns(absolute))
    for column in ("naive", "trailing_mean", "ewma"):
        np.testing.assert_allclose(again[column], forecasts[column], rtol=1e-12)
    # same likelihood; arch's start for ν reads the kurtosis about the mean, so the optimizer
    # stops at a point equal up to its tolerance
    np.testing.assert_allclose(again["garch"], forecasts["garch"], rtol=1e-3)


def test_refitting_the_same_round_gives_the_same_forecasts(
    history: pl.DataFrame, span: pl.DataFrame, forecasts: pl.DataFrame
) -> None:
    again = fit_baselines(history, BaselineSettings()).forecast(span)
    assert again.equals(forecasts)


def test_too_few_returns_for_garch_fall_back_to_ewma_visibly(
    history: pl.DataFrame, span: pl.DataFrame
) -> None:
    fitted = fit_baselines(history.tail(100), BaselineSettings())
    garch_fit = fitted.fits[-1]
    assert garch_fit.baseline is Baseline.GARCH
    assert garch_fit.method_used == "ewma"
    assert "100 returns before the cutoff; GARCH(1,1)-t needs at least 250" in str(
        garch_fit.fallback_reason
    )
    out = fitted.forecast(span)
    assert out["garch"].equals(out["ewma"])


def test_a_fit_that_does_not_converge_falls_back_to_ewma_visibly() -> None:
    values = np.zeros(300)
    values[150] = 0.05  # one jump on flat prices: arch's optimizer fails (SLSQP code 4)
    fitted = fit_baselines(synthetic(values), BaselineSettings())
    garch_fit = fitted.fits[-1]
    assert garch_fit.method_used == "ewma"
    assert "did not converge (flag 4" in str(garch_fit.fallback_reason)
    assert "2010-01-04..2010-10-30" in str(garch_fit.fallback_reason)


def test_a_non_stationary_fit_falls_back_to_ewma_visibly() -> None:
    calm, wild = np.full(150, 1e-4), np.full(150, 0.1)
    values = np.concatenate([calm, wild]) * np.tile([1.0, -1.0], 150)
    garch_fit = fit_baselines(synthetic(values), BaselineSettings()).fits[-1]
    assert garch_fit.method_used == "ewma"
    assert "not stationary: α + β = 1.000000 >= 1" in str(garch_fit.fallback_reason)


def test_a_fit_whose_long_run_variance_misses_the_data_falls_back() -> None:
    values = np.zeros(300)
    values[::50] = 0.03  # rare equal jumps: arch drives ω to ~0
    garch_fit = fit_baselines(synthetic(values), BaselineSettings()).fits[-1]
    assert garch_fit.method_used == "ewma"
    assert "long-run variance" in str(garch_fit.fallback_reason)


def test_bad_fit_windows_are_named() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(BaselineError, match="holds 10 returns .* fewer than min_fit_rows = 20"):
        fit_baselines(synthetic(rng.normal(0, 0.01, 10)), BaselineSettings())
    with pytest.raises(BaselineError, match="every return .* is zero"):
        fit_baselines(synthetic(np.zeros(40)), BaselineSettings())
    with pytest.raises(BaselineError, match="lacks column"):
        fit_baselines(
            synthetic(rng.normal(0, 0.01, 40)).rename({"log_return": "r"}), BaselineSettings()
        )
    with_nan = rng.normal(0, 0.01, 40)
    with_nan[5] = np.nan
    with pytest.raises(BaselineError, match="1 row.* without a date or a finite"):
        fit_baselines(synthetic(with_nan), BaselineSettings())
    shuffled = synthetic(rng.normal(0, 0.01, 40)).reverse()
    with pytest.raises(BaselineError, match="must increase strictly"):
        fit_baselines(shuffled, BaselineSettings())


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="min_fit_rows"):
        BaselineSettings(trailing_days=30, min_fit_rows=20)
    with pytest.raises(ValidationError):
        BaselineSettings(ewma_lambda=1.0)
    assert BaselineSettings(trailing_days=5, min_fit_rows=5).trailing_days == 5
