"""The plan's two recursive-training metrics: symbolic alignment and trust delta.

**Symbolic alignment** of a set of days (one round): among the days on which at least one
active rule fired (``rules_fired > 0``) and the actual is known, the share of days on which the
rules moved the forecast toward the actual, |adjusted - actual| < |forecast - actual|, and the
RMSE change they caused on those days, RMSE(adjusted) - RMSE(forecast) (negative: the rules
helped). A day on which the rules fired but left the forecast as far from the actual as it was
counts as fired, neither toward nor away. A round on which no rule fired has no share: the
result says so (0 days, share None), it is never NaN or 0.

**Trust delta** of round R: skill(R) - skill(R-1), where a round's skill is the champion's
skill against the best baseline on that round's days, 1 - MSE(champion) / MSE(best baseline),
over the days on which the champion, every baseline and the actual are known; the best
baseline is the one with the lowest MSE on those days (so the champion is measured against
the hardest standard of the round, picked on the same days: a conservative choice for the
champion). Skill above 0: the champion's loss was lower than every baseline's. Its interval is a
percentile block bootstrap: each round's days are resampled in circular blocks of
``block_days`` (champion and baselines share the resample, so their losses stay paired), the
best baseline is picked again in every resample, and the two rounds are resampled
independently (their days do not overlap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
from arch.bootstrap import CircularBlockBootstrap

from pulse_assets.config import RecursiveMetricsSettings
from pulse_assets.evaluation.baselines import Baseline
from pulse_assets.evaluation.scoreboard import CHAMPION, forecaster_columns
from pulse_assets.metrics.regression import MetricsError

BASELINES = tuple(baseline.value for baseline in Baseline)
FloatArray = npt.NDArray[np.float64]


# ----------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class SymbolicAlignment:
    """What the active rules did on the days they fired (see the module docstring)."""

    fired_days: int  # fired, with forecast, adjusted and actual known
    toward_days: int
    away_days: int
    unchanged_days: int
    unresolved_days: int  # fired, but the actual (or a forecast) is not known yet
    share_toward: float | None  # None when fired_days is 0
    rmse_forecast: float | None
    rmse_adjusted: float | None
    rmse_change: float | None  # rmse_adjusted - rmse_forecast; negative: the rules helped

    @property
    def outcome(self) -> str:
        if self.fired_days == 0:
            return "no active rule fired on a day whose actual is known" + (
                f" ({self.unresolved_days} fired day(s) await their actual)"
            ) * (self.unresolved_days > 0)
        return (
            f"rules fired on {self.fired_days} day(s): moved the forecast toward the actual on "
            f"{self.toward_days}, away on {self.away_days}, RMSE change {self.rmse_change:+.4g}"
        )


def symbolic_alignment(impact: pl.DataFrame, label: str) -> SymbolicAlignment:
    """Symbolic alignment of the days of ``impact``: a rule-impact frame with ``rules_fired``
    (int), ``forecast_<label>``, ``adjusted_<label>`` and ``actual_<label>``."""
    forecast, adjusted, actual = (f"{p}_{label}" for p in ("forecast", "adjusted", "actual"))
    missing = [c for c in ("rules_fired", forecast, adjusted, actual) if c not in impact.columns]
    if missing:
        raise MetricsError(
            f"the rule-impact frame lacks column(s) {missing}; it has {impact.columns}"
        )
    if impact.get_column("rules_fired").null_count():
        raise MetricsError("rules_fired is null on some days; it must count the rules that fired")
    fired = impact.filter(pl.col("rules_fired") > 0)
    resolved = fired.drop_nulls([forecast, adjusted, actual])
    f, a, y = (
        resolved.get_column(c).cast(pl.Float64).to_numpy() for c in (forecast, adjusted, actual)
    )
    if not (np.isfinite(f).all() and np.isfinite(a).all() and np.isfinite(y).all()):
        raise MetricsError(
            f"{forecast}, {adjusted} or {actual} is NaN/inf on a day a rule fired; a rule whose "
            "result is not finite must leave the forecast unchanged, as application does"
        )
    before, after = np.abs(f - y), np.abs(a - y)
    days = resolved.height
    rmse_f = float(np.sqrt(np.mean((f - y) ** 2))) if days else None
    rmse_a = float(np.sqrt(np.mean((a - y) ** 2))) if days else None
    return SymbolicAlignment(
        fired_days=days,
        toward_days=int((after < before).sum()),
        away_days=int((after > before).sum()),
        unchanged_days=int((after == before).sum()),
        unresolved_days=fired.height - days,
        share_toward=float((after < before).mean()) if days else None,
        rmse_forecast=rmse_f,
        rmse_adjusted=rmse_a,
        rmse_change=rmse_a - rmse_f if rmse_a is not None and rmse_f is not None else None,
    )


# ----------------------------------------------------------------------------- trust delta


def squared_losses(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """``date``, ``champion`` and one column per baseline: each forecaster's squared error on
    the days of a retrodiction frame where the champion, every baseline and the actual are
    known, sorted by date."""
    columns = forecaster_columns(label)
    actual = f"actual_{label}"
    names = [CHAMPION, *BASELINES]
    known = frame.drop_nulls([actual, *(columns[n] for n in names)]).sort("date")
    return known.select(
        "date", *((pl.col(columns[n]) - pl.col(actual)).pow(2).alias(n) for n in names)
    )


@dataclass(frozen=True)
class RoundSkill:
    """The champion's skill against the best baseline over one round's days."""

    days: int
    champion_mse: float
    best_baseline: str
    best_baseline_mse: float
    skill: float  # 1 - champion_mse / best_baseline_mse


def _matrices(
    losses: pl.DataFrame, champion: str, baselines: Sequence[str]
) -> tuple[FloatArray, FloatArray]:
    missing = [c for c in (champion, *baselines) if c not in losses.columns]
    if missing:
        raise MetricsError(f"the loss frame lacks column(s) {missing}; it has {losses.columns}")
    if not baselines:
        raise MetricsError("name at least one baseline to measure the champion's skill against")
    own = losses.get_column(champion).cast(pl.Float64).to_numpy()
    others = losses.select(pl.col(list(baselines)).cast(pl.Float64)).to_numpy()
    if not (np.isfinite(own).all() and np.isfinite(others).all()):
        raise MetricsError("the loss frame holds NaN/inf/null; keep the days every loss is known")
    return own, others


def _skill(own: FloatArray, others: FloatArray) -> float:
    return float(1.0 - own.mean() / others.mean(axis=0).min())


def _skill_array(own: FloatArray, others: FloatArray) -> FloatArray:
    """:func:`_skill` as the one-element array ``arch``'s ``apply`` collects."""
    return np.array([_skill(own, others)])


def round_skill(
    losses: pl.DataFrame, champion: str = CHAMPION, baselines: Sequence[str] = BASELINES
) -> RoundSkill:
    """Skill of column ``champion`` against the best of ``baselines`` (per-day losses, e.g.
    from :func:`squared_losses`)."""
    own, others = _matrices(losses, champion, baselines)
    if own.size == 0:
        raise MetricsError("no day with every loss known: no skill")
    means = others.mean(axis=0)
    best = int(means.argmin())
    if means[best] <= 0:
        raise MetricsError(
            f"baseline {baselines[best]!r} has zero loss on all {own.size} days: the loss ratio, "
            "and so the skill, is undefined"
        )
    return RoundSkill(
        days=int(own.size),
        champion_mse=float(own.mean()),
        best_baseline=baselines[best],
        best_baseline_mse=float(means[best]),
        skill=_skill(own, others),
    )


@dataclass(frozen=True)
class TrustDelta:
    """skill(current) - skill(previous), with its percentile block-bootstrap interval."""

    previous: RoundSkill
    current: RoundSkill
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    block_days: int
    resamples: int


def _skill_draws(
    own: FloatArray,
    others: FloatArray,
    settings: RecursiveMetricsSettings,
    rng: np.random.Generator,
) -> FloatArray:
    block = min(settings.block_days, own.size)
    bootstrap = CircularBlockBootstrap(block, own, others, seed=rng)
    draws = bootstrap.apply(_skill_array, settings.resamples)
    return np.asarray(draws, dtype=np.float64).ravel()


def trust_delta(
    previous: pl.DataFrame,
    current: pl.DataFrame,
    *,
    champion: str = CHAMPION,
    baselines: Sequence[str] = BASELINES,
    settings: RecursiveMetricsSettings | None = None,
) -> TrustDelta:
    """Trust delta from the ``previous`` round's per-day losses to the ``current`` round's (two
    frames with columns ``champion`` and ``baselines``, one row per day, e.g. from
    :func:`squared_losses`); see the module docstring."""
    settings = settings or RecursiveMetricsSettings()
    for role, losses in (("previous", previous), ("current", current)):
        if losses.height < settings.min_days:
            raise MetricsError(
                f"the {role} round has {losses.height} scored day(s), fewer than "
                f"min_days = {settings.min_days}: no trust delta"
            )
    before, after = (
        round_skill(previous, champion, baselines),
        round_skill(current, champion, baselines),
    )
    rng_previous, rng_current = np.random.default_rng(settings.seed).spawn(2)
    draws = _skill_draws(*_matrices(current, champion, baselines), settings, rng_current)
    draws = draws - _skill_draws(*_matrices(previous, champion, baselines), settings, rng_previous)
    tail = (1.0 - settings.confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return TrustDelta(
        previous=before,
        current=after,
        delta=after.skill - before.skill,
        ci_low=float(low),
        ci_high=float(high),
        confidence=settings.confidence,
        block_days=settings.block_days,
        resamples=settings.resamples,
    )
