"""Mine retrodiction residuals for error patterns (the plan's SymbolicRevisionPlanner).

Residual = forecast - actual. For each feature, quantile bins; for the most telling
features, pairs of bins (bounded). Each pattern's residuals are compared with the rest by a
Welch t-test; Benjamini-Hochberg controls the false discovery rate over every pattern
tried. A significant pattern becomes a correction rule for the rows it covers: a bias
correction (``-= mean residual``) or, for positive forecasts, a scale correction, whichever
lowers the RMSE more on the mining windows. Deterministic: no randomness anywhere.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import stats

from pulse_assets.drift.statistics import benjamini_hochberg
from pulse_assets.rules.language import adjusted_expr, condition_expr, parse

if TYPE_CHECKING:
    from pulse_assets.rules.repository import Confidence


@dataclass(frozen=True)
class MinerSettings:
    quantiles: int = 5
    max_pair_features: int = 6
    fdr_q: float = 0.05
    min_support: int = 15
    max_rules: int = 40


@dataclass(frozen=True)
class Pattern:
    """Rows where a condition holds and the residual mean differs from the rest."""

    condition: str
    support: int
    mean_residual: float
    effect_size: float
    p_value: float
    q_value: float = 1.0


@dataclass(frozen=True)
class Candidate:
    definition: str
    fingerprint: str
    name: str
    description: str
    confidence: Confidence
    impact: float
    pattern: Pattern


def _bounds(values: np.ndarray, quantiles: int) -> list[tuple[float | None, float | None]]:
    edges = np.unique(np.round(np.quantile(values, np.linspace(0, 1, quantiles + 1)[1:-1]), 6))
    cuts = [None, *edges.tolist(), None]
    return [(cuts[k], cuts[k + 1]) for k in range(len(cuts) - 1)]


def _condition(feature: str, low: float | None, high: float | None) -> tuple[str, pl.Expr]:
    parts, expr = [], pl.lit(True)
    if low is not None:
        parts.append(f"{feature} >= {low:.6g}")
        expr = expr & (pl.col(feature) >= low)
    if high is not None:
        parts.append(f"{feature} < {high:.6g}")
        expr = expr & (pl.col(feature) < high)
    return " AND ".join(parts), expr


def _test(
    residuals: np.ndarray, mask: np.ndarray, condition: str, min_support: int
) -> Pattern | None:
    inside, outside = residuals[mask], residuals[~mask]
    if len(inside) < min_support or len(outside) < min_support:
        return None
    result = stats.ttest_ind(inside, outside, equal_var=False)
    pooled = np.sqrt((inside.var(ddof=1) + outside.var(ddof=1)) / 2)
    effect = abs(inside.mean() - outside.mean()) / pooled if pooled > 0 else 0.0
    return Pattern(
        condition, int(mask.sum()), float(inside.mean()), float(effect), float(result.pvalue)
    )


def find_patterns(
    frame: pl.DataFrame, features: list[str], label: str, settings: MinerSettings
) -> list[Pattern]:
    """Significant single-bin and two-bin patterns of ``error_<label>`` (forecast - actual)."""
    columns = [f"error_{label}", *features]
    data = frame.drop_nulls(columns).filter(
        pl.all_horizontal(pl.col(c).cast(pl.Float64).is_finite() for c in columns)
    )
    residuals = data.get_column(f"error_{label}").to_numpy().astype(np.float64)
    singles: list[tuple[str, str, pl.Expr, Pattern]] = []
    for feature in sorted(features):
        values = data.get_column(feature).to_numpy()
        if np.unique(values).size < settings.quantiles:
            continue
        for low, high in _bounds(values, settings.quantiles):
            text, expr = _condition(feature, low, high)
            pattern = _test(
                residuals, data.select(expr).to_series().to_numpy(), text, settings.min_support
            )
            if pattern is not None:
                singles.append((feature, text, expr, pattern))
    best: dict[str, float] = {}
    for feature, _, _, pattern in singles:
        best[feature] = min(best.get(feature, 1.0), pattern.p_value)
    top = sorted(best, key=lambda f: (best[f], f))[: settings.max_pair_features]
    bins = {f: [(t, e) for g, t, e, _ in singles if g == f] for f in top}
    pairs = []
    for first, second in itertools.combinations(top, 2):
        for (text_a, expr_a), (text_b, expr_b) in itertools.product(bins[first], bins[second]):
            text = f"{text_a} AND {text_b}"
            pattern = _test(
                residuals,
                data.select(expr_a & expr_b).to_series().to_numpy(),
                text,
                settings.min_support,
            )
            if pattern is not None:
                pairs.append(pattern)
    tried = [p for *_, p in singles] + pairs
    q_values = benjamini_hochberg(np.array([p.p_value for p in tried]))
    return [
        Pattern(p.condition, p.support, p.mean_residual, p.effect_size, p.p_value, float(q))
        for p, q in zip(tried, q_values, strict=True)
        if q < settings.fdr_q
    ]


def confidence(pattern: Pattern) -> Confidence:
    if pattern.q_value < 0.001 and pattern.effect_size >= 0.8:
        return "high"
    if pattern.q_value < 0.01 and pattern.effect_size >= 0.5:
        return "medium"
    return "low"


def _rmse(frame: pl.DataFrame, forecast: pl.Expr, actual: str) -> float:
    """RMSE of ``forecast`` against column ``actual`` (rows where either is null left out)."""
    return float(frame.select(((forecast - pl.col(actual)) ** 2).mean().sqrt()).item())


def _correction(frame: pl.DataFrame, pattern: Pattern, label: str) -> tuple[str, float]:
    """The better of a bias and a scale correction on the pattern's rows, and its RMSE gain."""
    forecast, actual = f"forecast_{label}", f"actual_{label}"
    rows = frame.filter(_mask(pattern.condition, label)).drop_nulls([forecast, actual])
    options = [
        f"{label} -= {pattern.mean_residual:.6g}"
        if pattern.mean_residual >= 0
        else f"{label} += {-pattern.mean_residual:.6g}"
    ]
    forecasts = rows.get_column(forecast).to_numpy().astype(np.float64)
    if forecasts.size and (forecasts > 0).all():
        actuals = rows.get_column(actual).to_numpy().astype(np.float64)
        options.append(f"{label} *= {actuals.mean() / forecasts.mean():.6g}")
    base = _rmse(frame, pl.col(forecast), actual)
    best, best_gain = options[0], -np.inf
    for option in options:
        definition = f"IF {pattern.condition} THEN {option}"
        gain = base - _rmse(frame, _adjusted(definition, label), actual)
        if gain > best_gain:
            best, best_gain = option, gain
    return f"IF {pattern.condition} THEN {best}", float(best_gain)


def _mask(condition: str, label: str) -> pl.Expr:
    return condition_expr(parse(f"IF {condition} THEN {label} += 0"))


def _adjusted(definition: str, label: str) -> pl.Expr:
    return adjusted_expr(parse(definition), pl.col(f"forecast_{label}"))


def mining_rows(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows with a finite forecast, actual and error of ``label``: what the miner reads."""
    needed = [f"forecast_{label}", f"actual_{label}", f"error_{label}"]
    return frame.drop_nulls(needed).filter(pl.all_horizontal(pl.col(c).is_finite() for c in needed))


def mine_rules(
    frame: pl.DataFrame,
    features: list[str],
    label: str,
    settings: MinerSettings,
    patterns: list[Pattern] | None = None,
) -> list[Candidate]:
    """Correction rules for the significant patterns, best estimated impact first, deduplicated.
    ``patterns``: those ``find_patterns`` found on ``mining_rows(frame, label)``, when the
    caller has them already."""
    usable = mining_rows(frame, label)
    if patterns is None:
        patterns = find_patterns(usable, features, label, settings)
    candidates: dict[str, Candidate] = {}
    for pattern in patterns:
        definition, gain = _correction(usable, pattern, label)
        rule = parse(definition)
        direction = "lowers" if rule.sign() < 0 else "raises"
        candidate = Candidate(
            definition=definition,
            fingerprint=rule.fingerprint,
            name=f"{direction} {label} when {pattern.condition}"[:200],
            description=(
                f"residual mean {pattern.mean_residual:+.4g} on {pattern.support} mining windows "
                f"(Welch t-test q={pattern.q_value:.2g}, effect size {pattern.effect_size:.2f})"
            ),
            confidence=confidence(pattern),
            impact=gain,
            pattern=pattern,
        )
        if rule.fingerprint not in candidates or candidates[rule.fingerprint].impact < gain:
            candidates[rule.fingerprint] = candidate
    ordered = sorted(candidates.values(), key=lambda c: (-c.impact, c.fingerprint))
    return ordered[: settings.max_rules]
