"""The Diebold–Mariano test of equal predictive accuracy, with the HLN small-sample correction.

For two forecasts' errors e1, e2 and a loss L, d_t = L(e1_t) - L(e2_t); the null says
E[d] = 0. The statistic is d̄ / sqrt(V̂/n) multiplied by the Harvey–Leybourne–Newbold (1997)
factor sqrt((n + 1 - 2h + h(h-1)/n) / n), and its p-value comes from Student's t with n-1
degrees of freedom: the test of R's ``forecast::dm.test``.

V̂ is the Newey–West long-run variance of d: autocovariances γ_k (divisor n) up to lag h-1
with Bartlett weights 1 - k/h. An h-step forecast error is MA(h-1) under the null, so lags
beyond h-1 carry no covariance; Bartlett weights keep V̂ non-negative, where the rectangular
weights of the original test can make it negative for h > 1. For h = 1 both are γ_0, so the
result equals ``dm.test``'s default; for h > 1 it equals ``dm.test(..., varestimator =
"bartlett")`` and an OLS of d on a constant with statsmodels' HAC covariance (maxlags h-1).

Degenerate inputs: fewer than max(3, 2h + 1) pairs is an error (the HLN factor and t(n-1)
need them). A loss difference that is zero on every day means the two forecasts are equally
accurate on every day: the statistic is 0 (p = 1 two-sided, 0.5 one-sided). A loss difference
that is the same non-zero value every day has no variance, so no test exists: an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import stats

from pulse_assets.errors import PulseError

FloatArray = npt.NDArray[np.float64]


class SignificanceError(PulseError):
    """Forecast errors on which the Diebold–Mariano test is undefined."""


class Loss(StrEnum):
    """Loss of one forecast error."""

    SQUARED = "squared"
    ABSOLUTE = "absolute"


class Alternative(StrEnum):
    """The alternative hypothesis about d = L(e1) - L(e2), as in R's ``dm.test``.

    ``less``: the first forecast is more accurate (E[d] < 0); ``greater``: the second is.
    """

    TWO_SIDED = "two-sided"
    LESS = "less"
    GREATER = "greater"


@dataclass(frozen=True)
class DieboldMarianoResult:
    """One Diebold–Mariano test; ``statistic`` includes the HLN correction."""

    statistic: float
    p_value: float
    mean_loss_difference: float
    n: int
    horizon: int
    alternative: Alternative
    loss: Loss


def loss_differential(errors_1: npt.ArrayLike, errors_2: npt.ArrayLike, loss: Loss) -> FloatArray:
    """d_t = L(e1_t) - L(e2_t), checked: same length, finite."""
    e1 = np.asarray(errors_1, dtype=np.float64).ravel()
    e2 = np.asarray(errors_2, dtype=np.float64).ravel()
    if e1.shape != e2.shape:
        raise SignificanceError(
            f"the first forecast has {e1.size} errors but the second has {e2.size}; "
            "compare the two forecasts on the same days"
        )
    if not (np.isfinite(e1).all() and np.isfinite(e2).all()):
        raise SignificanceError(
            "forecast errors hold NaN/inf; drop the days whose label is unknown first"
        )
    if loss is Loss.SQUARED:
        return e1**2 - e2**2
    return np.abs(e1) - np.abs(e2)


def newey_west_variance(values: FloatArray, max_lag: int) -> float:
    """Long-run variance of ``values``: γ_0 + 2·Σ_{k=1..L} (1 - k/(L+1))·γ_k, divisor n."""
    centred = values - values.mean()
    n = centred.size
    variance = float(centred @ centred) / n
    for lag in range(1, max_lag + 1):
        weight = 1.0 - lag / (max_lag + 1.0)
        variance += 2.0 * weight * float(centred[lag:] @ centred[:-lag]) / n
    return variance


def hln_factor(n: int, horizon: int) -> float:
    """Harvey–Leybourne–Newbold small-sample correction of the DM statistic."""
    return math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)


def _p_value(statistic: float, degrees: int, alternative: Alternative) -> float:
    if alternative is Alternative.LESS:
        return float(stats.t.cdf(statistic, degrees))
    if alternative is Alternative.GREATER:
        return float(stats.t.sf(statistic, degrees))
    return float(2.0 * stats.t.sf(abs(statistic), degrees))


def _statistic(differential: FloatArray, horizon: int) -> float:
    """d̄ / sqrt(V̂/n) before the HLN factor; 0 when d is 0 on every day."""
    if not differential.any():
        return 0.0
    if np.ptp(differential) == 0:
        raise SignificanceError(
            f"the loss difference is {differential[0]!r} on every one of the "
            f"{differential.size} days: it has no variance, so the Diebold–Mariano test is "
            "undefined; one forecast beats the other by the same loss every day"
        )
    variance = newey_west_variance(differential, horizon - 1)
    if not variance > 0:
        raise SignificanceError(
            f"the long-run variance of the loss difference is {variance!r} (n = "
            f"{differential.size}, h = {horizon}): not positive, the test is undefined"
        )
    return float(differential.mean() / math.sqrt(variance / differential.size))


def diebold_mariano(
    errors_1: npt.ArrayLike,
    errors_2: npt.ArrayLike,
    loss: Loss = Loss.SQUARED,
    horizon: int = 1,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> DieboldMarianoResult:
    """Diebold–Mariano test of e1 against e2 (forecast errors on the same days, in order)."""
    if horizon < 1:
        raise SignificanceError(f"the forecast horizon must be at least 1, got {horizon}")
    differential = loss_differential(errors_1, errors_2, loss)
    n = differential.size
    if n < max(3, 2 * horizon + 1):
        raise SignificanceError(
            f"{n} pairs of forecast errors are too few for the Diebold–Mariano test at "
            f"horizon {horizon}: it needs at least {max(3, 2 * horizon + 1)}; compare over "
            "more days"
        )
    statistic = _statistic(differential, horizon) * hln_factor(n, horizon)
    return DieboldMarianoResult(
        statistic=statistic,
        p_value=_p_value(statistic, n - 1, alternative),
        mean_loss_difference=float(differential.mean()),
        n=n,
        horizon=horizon,
        alternative=alternative,
        loss=loss,
    )
