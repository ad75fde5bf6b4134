"""The field's standard baselines for the next day's absolute return, fitted point in time.

Each baseline forecasts E|r_{t+1}| on day t from log returns r up to and including r_t:

- ``naive``: persistence, |r_t|;
- ``trailing_mean``: the mean of |r| over the last k returns (k = ``trailing_days``);
- ``ewma``: RiskMetrics, σ²_{t+1} = λ·σ²_t + (1-λ)·r_t², forecast sqrt(2/π)·σ_{t+1}
  (E|r| of a normal return);
- ``garch``: GARCH(1,1) with Student-t innovations, estimated by ``arch``, forecast
  σ_{t+1|t}·E|z| with E|z| of the fitted standardized t (:func:`student_t_abs_mean`).

A round fits once, on the returns known before its cutoff (:func:`fit_baselines`), and then
forecasts each of its days (:meth:`FittedBaselines.forecast`) by carrying the fitted state
forward one return at a time, without re-estimating: the forecast of day t reads the fit
window and the span's returns up to t, nothing later.

Point-in-time choices:

- EWMA starts its recursion at the first return of the fit window with σ² = the mean of r²
  over the fit window (RiskMetrics' zero-mean variance). That start only uses returns before
  the cutoff, and λ^n makes it negligible after a few hundred days.
- GARCH has a zero mean (a daily mean is tiny next to σ, and it keeps E|r| = σ·E|z| exact).
  ``arch`` fits on returns in percent (×100): its optimizer is tuned for that scale, and on raw
  log returns ω is ~1e-6 and it warns that the data are poorly scaled; forecasts are divided by
  100 again. The span is filtered by the GARCH recursion σ²_{t+1} = ω + α·r_t² + β·σ²_t from
  ``arch``'s own one-step forecast at the end of the fit window, so none of the variance
  bounds that ``arch`` derives from a whole sample can carry later returns into earlier days.
- A GARCH fit that fails (too few returns, ``arch`` raises, its optimizer does not converge, or
  the parameters are not those of a stationary model whose long-run variance is near the fit
  window's, see :data:`MAX_VARIANCE_RATIO`) falls back to EWMA for that round; the
  ``garch`` column then holds the EWMA forecast and :attr:`FittedBaselines.fits` records the
  method used and why, for the round's metadata. Never silently.

The zero-mean GARCH with symmetric innovations and EWMA depend on r² only, and the others on
|r|, so every baseline gives the same forecasts from |r| as from r (GARCH up to the
optimizer's tolerance: ``arch`` starts ν from the kurtosis about the mean): the lagged
absolute-return label (the label of day t-1 is |r_t|) is a valid input.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import polars as pl
from arch import arch_model
from arch.univariate.base import ARCHModelResult
from arch.utility.exceptions import ConvergenceWarning
from scipy.signal import lfilter
from scipy.special import gammaln

from pulse_assets.config import BaselineSettings
from pulse_assets.errors import PulseError

DATE_COLUMN = "date"
RETURN_COLUMN = "log_return"
PERCENT = 100.0
NORMAL_ABS_MEAN = math.sqrt(2.0 / math.pi)
"""E|z| of a standard normal z: E|r| = sqrt(2/π)·σ for a normal return."""

MAX_VARIANCE_RATIO = 100.0
"""A GARCH fit whose long-run variance ω/(1-α-β) is this many times above or below the fit
window's mean r² has not described the data (e.g. ω pushed to ~0 on sparse jumps): fallback."""

FloatArray = npt.NDArray[np.float64]


class BaselineError(PulseError):
    """Returns that no baseline can be fitted on or forecast from."""


class GarchFitError(BaselineError):
    """GARCH could not be fitted on a round's returns; the round falls back to EWMA."""


class Baseline(StrEnum):
    """The baselines, named as their forecast columns."""

    NAIVE = "naive"
    TRAILING_MEAN = "trailing_mean"
    EWMA = "ewma"
    GARCH = "garch"


@dataclass(frozen=True)
class GarchParams:
    """GARCH(1,1)-t parameters on returns in percent (ω in percent²)."""

    omega: float
    alpha: float
    beta: float
    nu: float

    def problem(self, mean_square: float) -> str | None:
        """Why these parameters make no stationary GARCH(1,1)-t of data whose mean r² (in
        percent²) is ``mean_square``, or None when they do."""
        values = (self.omega, self.alpha, self.beta, self.nu)
        if not all(math.isfinite(v) for v in values):
            return f"parameters are not finite: {self}"
        if self.omega <= 0 or self.alpha < 0 or self.beta < 0:
            return f"ω must be positive and α, β non-negative: {self}"
        if self.alpha + self.beta >= 1:
            return f"not stationary: α + β = {self.alpha + self.beta:.6f} >= 1 ({self})"
        if self.nu <= 2:
            return f"Student-t ν = {self.nu} has no variance (needs ν > 2)"
        ratio = self.omega / (1.0 - self.alpha - self.beta) / mean_square
        if not 1.0 / MAX_VARIANCE_RATIO <= ratio <= MAX_VARIANCE_RATIO:
            return (
                f"long-run variance ω/(1-α-β) is {ratio:.3g} times the fit window's mean r², "
                f"outside [1/{MAX_VARIANCE_RATIO:g}, {MAX_VARIANCE_RATIO:g}] ({self})"
            )
        return None


@dataclass(frozen=True)
class GarchState:
    """A fitted GARCH(1,1)-t: its parameters and σ² (percent²) forecast for the next day."""

    params: GarchParams
    next_variance: float


@dataclass(frozen=True)
class BaselineFit:
    """How one baseline was fitted for a round: what the round's metadata shows."""

    baseline: Baseline
    method_used: str
    fallback_reason: str | None
    params: dict[str, float]


def student_t_abs_mean(nu: float) -> float:
    """E|z| of a Student-t with ν degrees of freedom standardized to unit variance.

    z = t·sqrt((ν-2)/ν) for a standard t with ν degrees of freedom, and
    E|t| = 2·sqrt(ν)·Γ((ν+1)/2) / (sqrt(π)·(ν-1)·Γ(ν/2)), so
    E|z| = 2·sqrt(ν-2)·Γ((ν+1)/2) / (sqrt(π)·(ν-1)·Γ(ν/2)); it tends to sqrt(2/π) as ν grows.
    Computed through log-gamma so large ν does not overflow.
    """
    if not nu > 2:
        raise BaselineError(f"a standardized Student-t needs ν > 2, got ν = {nu}")
    log_ratio = gammaln((nu + 1.0) / 2.0) - gammaln(nu / 2.0)
    return float(
        2.0 * math.sqrt(nu - 2.0) * math.exp(log_ratio) / (math.sqrt(math.pi) * (nu - 1.0))
    )


def _carry_forward(inputs: FloatArray, decay: float, initial: float) -> FloatArray:
    """s_{i+1} = inputs_i + decay·s_i for each i, from s_0 = ``initial``; returns s_1..s_n.

    The linear recursion shared by EWMA and GARCH, run as an IIR filter.
    """
    filtered, _ = lfilter([1.0], [1.0, -decay], inputs, zi=[decay * initial])
    return np.asarray(filtered, dtype=np.float64)


def _validated_returns(frame: pl.DataFrame, role: str) -> tuple[list[date], FloatArray]:
    """Dates and returns of ``frame``, checked: dated, finite, one row per strictly later day."""
    missing = [c for c in (DATE_COLUMN, RETURN_COLUMN) if c not in frame.columns]
    if missing:
        raise BaselineError(
            f"the {role} lacks column(s) {missing}; pass a frame with {DATE_COLUMN!r} (date) "
            f"and {RETURN_COLUMN!r} (the day's log return)"
        )
    if frame.schema[DATE_COLUMN] != pl.Date:
        raise BaselineError(
            f"the {role}'s {DATE_COLUMN!r} is {frame.schema[DATE_COLUMN]}, not Date"
        )
    if not frame.schema[RETURN_COLUMN].is_numeric():
        raise BaselineError(
            f"the {role}'s {RETURN_COLUMN!r} is {frame.schema[RETURN_COLUMN]}, not a number"
        )
    dates = frame[DATE_COLUMN].to_list()
    returns = frame[RETURN_COLUMN].cast(pl.Float64).to_numpy()
    bad = [d for d, r in zip(dates, returns, strict=True) if d is None or not math.isfinite(r)]
    if bad:
        raise BaselineError(
            f"the {role} has {len(bad)} row(s) without a date or a finite {RETURN_COLUMN!r} "
            f"(first: {bad[0]}); drop days whose return is unknown before fitting"
        )
    _check_increasing(dates, role)
    return dates, np.asarray(returns, dtype=np.float64)


def _check_increasing(dates: list[date], role: str) -> None:
    for earlier, later in zip(dates, dates[1:], strict=False):
        if later <= earlier:
            raise BaselineError(
                f"the {role}'s dates must increase strictly, but {later} follows {earlier}; "
                "sort by date and keep one return per day"
            )


def _ewma_next_variance(returns: FloatArray, lam: float) -> float:
    """σ² forecast for the day after ``returns``, started from their mean square."""
    initial = float(np.mean(returns**2))
    return float(_carry_forward((1.0 - lam) * returns**2, lam, initial)[-1])


def _fit_arch(percent_returns: FloatArray) -> tuple[ARCHModelResult, list[str]]:
    """``arch``'s fit and the convergence warnings it gave; other warnings pass on unchanged."""
    model = arch_model(percent_returns, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model.fit(disp="off", show_warning=True)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError) as error:
            raise GarchFitError(f"arch raised {type(error).__name__}: {error}") from error
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return result, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


def fit_garch(returns: FloatArray, min_rows: int) -> GarchState:
    """GARCH(1,1)-t fitted by ``arch`` on ``returns`` (log returns before a round's cutoff).

    Raises :class:`GarchFitError` with the reason when no usable fit comes out.
    """
    if returns.size < min_rows:
        raise GarchFitError(
            f"{returns.size} returns before the cutoff; GARCH(1,1)-t needs at least {min_rows} "
            "(garch_min_fit_rows)"
        )
    percent = returns * PERCENT
    result, convergence_warnings = _fit_arch(percent)
    flag = int(result.convergence_flag)
    if flag != 0 or convergence_warnings:
        message = result.optimization_result.message
        raise GarchFitError(f"arch's optimizer did not converge (flag {flag}: {message})")
    values = result.params
    params = GarchParams(
        omega=float(values["omega"]),
        alpha=float(values["alpha[1]"]),
        beta=float(values["beta[1]"]),
        nu=float(values["nu"]),
    )
    problem = params.problem(float(np.mean(percent**2)))
    if problem is not None:
        raise GarchFitError(problem)
    forecast = result.forecast(horizon=1, reindex=False)
    return GarchState(params=params, next_variance=float(forecast.variance.to_numpy()[-1, 0]))


@dataclass(frozen=True)
class FittedBaselines:
    """Every baseline fitted on one round's fit window, ready to forecast the round's days."""

    settings: BaselineSettings
    fit_end: date
    fit_rows: int
    recent_abs_returns: FloatArray
    ewma_next_variance: float
    garch: GarchState | None
    garch_fallback_reason: str | None

    @property
    def fits(self) -> tuple[BaselineFit, ...]:
        """How each baseline was fitted, for the round's metadata."""
        ewma_params = {"lambda": self.settings.ewma_lambda}
        return (
            BaselineFit(Baseline.NAIVE, Baseline.NAIVE.value, None, {}),
            BaselineFit(
                Baseline.TRAILING_MEAN,
                Baseline.TRAILING_MEAN.value,
                None,
                {"k": float(self.settings.trailing_days)},
            ),
            BaselineFit(Baseline.EWMA, Baseline.EWMA.value, None, ewma_params),
            self._garch_fit(ewma_params),
        )

    def _garch_fit(self, ewma_params: dict[str, float]) -> BaselineFit:
        if self.garch is None:
            return BaselineFit(
                Baseline.GARCH, Baseline.EWMA.value, self.garch_fallback_reason, ewma_params
            )
        p = self.garch.params
        params = {"omega": p.omega, "alpha": p.alpha, "beta": p.beta, "nu": p.nu}
        return BaselineFit(Baseline.GARCH, Baseline.GARCH.value, None, params)

    def forecast(self, span: pl.DataFrame) -> pl.DataFrame:
        """One row per day t of ``span``: each baseline's forecast of |r_{t+1}| made on t.

        ``span`` holds the round's returns, from its first day after the fit window on; day t's
        forecast reads the fitted state and the span's returns up to and including t.
        """
        dates, returns = _validated_returns(span, "forecast span")
        if dates and dates[0] <= self.fit_end:
            raise BaselineError(
                f"the forecast span starts on {dates[0]}, not after the fit window's last day "
                f"{self.fit_end}; pass only the round's days, from its cutoff on"
            )
        ewma = self._ewma(returns)
        garch = ewma if self.garch is None else self._garch(returns)
        return pl.DataFrame(
            {
                DATE_COLUMN: pl.Series(dates, dtype=pl.Date),
                Baseline.NAIVE.value: np.abs(returns),
                Baseline.TRAILING_MEAN.value: self._trailing_mean(returns),
                Baseline.EWMA.value: ewma,
                Baseline.GARCH.value: garch,
            }
        )

    def _trailing_mean(self, returns: FloatArray) -> FloatArray:
        window = self.settings.trailing_days
        history = np.concatenate([self.recent_abs_returns, np.abs(returns)])
        return np.convolve(history, np.full(window, 1.0 / window), mode="valid")

    def _ewma(self, returns: FloatArray) -> FloatArray:
        lam = self.settings.ewma_lambda
        variance = _carry_forward((1.0 - lam) * returns**2, lam, self.ewma_next_variance)
        return NORMAL_ABS_MEAN * np.sqrt(variance)

    def _garch(self, returns: FloatArray) -> FloatArray:
        assert self.garch is not None
        p = self.garch.params
        inputs = p.omega + p.alpha * (returns * PERCENT) ** 2
        variance = _carry_forward(inputs, p.beta, self.garch.next_variance)
        return student_t_abs_mean(p.nu) * np.sqrt(variance) / PERCENT


def fit_baselines(history: pl.DataFrame, settings: BaselineSettings) -> FittedBaselines:
    """Fit every baseline on ``history``: the returns known before a round's cutoff.

    Too few returns, or returns that are all zero, are an error: no baseline means anything
    then. A GARCH fit that fails is not an error: the round falls back to EWMA (see the module
    docstring) and :attr:`FittedBaselines.fits` says why.
    """
    dates, returns = _validated_returns(history, "fit window")
    if returns.size < settings.min_fit_rows:
        raise BaselineError(
            f"the fit window holds {returns.size} returns (through {dates[-1] if dates else '-'}),"
            f" fewer than min_fit_rows = {settings.min_fit_rows}; start the rounds later or "
            "lower min_fit_rows"
        )
    if not np.any(returns != 0):
        raise BaselineError(
            f"every return of the fit window {dates[0]}..{dates[-1]} is zero: prices did not "
            "move, so no volatility can be fitted; check the price source for stale values"
        )
    try:
        garch: GarchState | None = fit_garch(returns, settings.garch_min_fit_rows)
        reason = None
    except GarchFitError as error:
        garch, reason = None, f"GARCH fit on {dates[0]}..{dates[-1]} failed: {error}"
    return FittedBaselines(
        settings=settings,
        fit_end=dates[-1],
        fit_rows=int(returns.size),
        recent_abs_returns=np.abs(returns[returns.size - settings.trailing_days + 1 :]),
        ewma_next_variance=_ewma_next_variance(returns, settings.ewma_lambda),
        garch=garch,
        garch_fallback_reason=reason,
    )
