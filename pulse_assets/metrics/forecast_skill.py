"""Skill of a forecast of a volatility-type target: RMSE, MAE, QLIKE and Theil's U2.

The target is the next trading day's absolute log return |r_{t+1}|; a forecaster gives
f_t, its forecast of E|r_{t+1}| made on day t. RMSE, MAE and Theil's U2 (against naive
persistence) are the project's point-forecast metrics of :mod:`pulse_assets.metrics.regression`
on |r| itself.

QLIKE scores a variance forecast h against a variance proxy. The proxy is r² = |r|², and the
variance a forecast f of E|r| stands for is h = (π/2)·f², because E|r| = sqrt(2/π)·σ when
returns are normal. With that mapping a forecast equal to the true E|r| minimises expected
QLIKE for normal returns (E[QLIKE] is smallest at h = E[r²] = σ²); squaring f alone (h = f²)
would understate every variance by π/2 and reward forecasters biased upwards. One fixed mapping
serves every forecaster, so QLIKE values compare them on the same scale (Patton 2011: with an
unbiased variance proxy QLIKE ranks forecasts as the true variance would).

QLIKE is written log h + r²/h: it stays finite on a day whose close did not change (r = 0),
and it differs from r²/h - log(r²/h) - 1 only by a term that depends on the actual alone,
so rankings are the same. A forecast that is not positive stands for no variance:
:func:`qlike` raises, and :func:`forecast_skill` reports QLIKE as NaN (undefined), as
``regression_metrics`` does for MAPE; naive persistence forecasts 0 after a day whose close
did not change, so its QLIKE is often undefined.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pulse_assets.metrics.regression import MetricsError, _as_arrays, regression_metrics

FORECAST_SKILL_NAMES = ("rmse", "mae", "qlike", "theil_u2")


def variance_of_abs_forecast(forecast: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The variance (π/2)·f² that a forecast f of E|r| implies for normal returns."""
    return np.asarray(forecast, dtype=np.float64) ** 2 * (math.pi / 2.0)


def qlike(actual: npt.ArrayLike, forecast: npt.ArrayLike) -> float:
    """Mean QLIKE of forecasts of E|r| against the realised |r| (see the module docstring)."""
    y, f = _as_arrays(actual, forecast)
    not_positive = np.flatnonzero(f <= 0)
    if not_positive.size:
        raise MetricsError(
            f"QLIKE needs positive forecasts of |r|, but {not_positive.size} of {f.size} are "
            f"zero or negative (first at row {int(not_positive[0])}, value "
            f"{f[not_positive[0]]!r}); a volatility forecaster must not forecast zero"
        )
    variance = variance_of_abs_forecast(f)
    return float(np.mean(np.log(variance) + y**2 / variance))


def forecast_skill(
    actual: npt.ArrayLike, forecast: npt.ArrayLike, naive: npt.ArrayLike
) -> dict[str, float]:
    """RMSE, MAE, QLIKE and Theil's U2 of forecasts of E|r|; ``naive`` is persistence |r_t|.

    QLIKE is NaN when a forecast is not positive (see the module docstring).
    """
    point = regression_metrics(actual, forecast, naive)
    positive = bool(np.all(np.asarray(forecast, dtype=np.float64) > 0))
    return {
        "rmse": point["rmse"],
        "mae": point["mae"],
        "qlike": qlike(actual, forecast) if positive else float("nan"),
        "theil_u2": point["theil_u2"],
    }
