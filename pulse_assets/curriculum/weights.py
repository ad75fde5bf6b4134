"""Round R's curriculum: its scenarios scored, and the per-row training weights they give.

A scenario's weight is linear in its score: the lowest-scored scenario's rows weigh 1, the
highest-scored's ``max_weight_ratio``, then every weight is scaled so the rows' mean weight
is 1. So no scenario weighs more than ``max_weight_ratio`` times another, and the weighted
loss stays on the scale of the plain one.

Degenerate cases give uniform weights (exactly the unweighted training) with the reason in
:attr:`Curriculum.reason`, never silently: the curriculum switched off, one scenario, no
champion before the cutoff or too few of its out-of-sample error days, errors all zero, or
every scenario scoring the same.

Point in time: everything read is dated before the cutoff (feature rows, labels that resolved
before it, round records of rounds that started before it), so round R's curriculum is what
could have been computed on R's first day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import polars as pl

from pulse_assets.config import CURRICULUM_COMPONENTS, CurriculumSettings, TrainingConfig
from pulse_assets.curriculum.analysis import (
    TABLE_SCHEMA,
    ErrorAnalysis,
    analyze_errors,
    champion_errors,
)
from pulse_assets.curriculum.scenarios import (
    SCENARIO,
    CurriculumError,
    describe_scenarios,
    scenario_of,
    window_rows,
)
from pulse_assets.curriculum.scoring import scenario_scores
from pulse_assets.features.pipeline import feature_columns
from pulse_assets.training.rounds import ModelLoader, RoundRecord


def scenario_weights(scores: np.ndarray, rows: np.ndarray, max_ratio: float) -> np.ndarray:
    """Per-scenario row weights, linear in ``scores`` from 1 (lowest) to ``max_ratio``
    (highest), scaled so the mean over all rows (``rows`` per scenario) is 1."""
    low, high = float(scores.min()), float(scores.max())
    if not high > low:
        raise CurriculumError(f"all {scores.size} scenario scores equal {low!r}: no weights")
    raw = 1.0 + (max_ratio - 1.0) * (scores - low) / (high - low)
    return raw * rows.sum() / (raw * rows).sum()


@dataclass(frozen=True)
class Curriculum:
    """Round R's scenarios (regime descriptors, raw and scaled scores, ``score``, ``weight``),
    the error analysis behind them, and ``reason`` when its weights are uniform. It is the
    ``weighting`` that :func:`pulse_assets.training.rounds.run_round` takes."""

    cutoff: date
    period: str
    scenarios: pl.DataFrame
    reason: str | None = None
    error_days: int = 0
    champions: tuple[str, ...] = ()
    bins: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TABLE_SCHEMA))
    by_regime: pl.DataFrame = field(default_factory=pl.DataFrame)
    notes: tuple[str, ...] = ()

    @property
    def uniform(self) -> bool:
        return self.reason is not None

    def row_weights(self, frame: pl.DataFrame) -> np.ndarray:
        """One weight per row of ``frame`` (its ``date`` column), from its scenario, scaled to
        mean 1 over these rows; all 1.0 when the curriculum is uniform."""
        if self.uniform:
            return np.ones(frame.height)
        keyed = frame.select("date").with_columns(scenario_of(self.period))
        joined = keyed.join(
            self.scenarios.select(SCENARIO, "weight"),
            on=SCENARIO,
            how="left",
            maintain_order="left",
        )
        missing = joined.filter(pl.col("weight").is_null())
        if missing.height:
            raise CurriculumError(
                f"{missing.height} row(s) (first {missing.get_column('date').min()!s}) lie in no "
                f"scenario of the curriculum with cutoff {self.cutoff}: weigh only that round's "
                "training rows"
            )
        weights = joined.get_column("weight").to_numpy().astype(np.float64)
        return weights / weights.mean()

    def to_frame(self) -> pl.DataFrame:
        """The scenarios with the cutoff and the reason on every row: the asset's frame."""
        return self.scenarios.with_columns(
            pl.lit(self.cutoff).alias("cutoff"),
            pl.lit(self.reason, dtype=pl.String).alias("reason"),
        )

    def summary(self) -> dict[str, object]:
        """Figures for the asset's metadata."""
        figures: dict[str, object] = {
            "cutoff": self.cutoff.isoformat(),
            "scenarios": self.scenarios.height,
            "error_days": self.error_days,
            "champions": ", ".join(self.champions) or "none",
            "weights": "uniform" if self.uniform else "curriculum",
            "reason": self.reason or "scored",
            "notes": "; ".join(self.notes) or "none",
        }
        if not self.uniform:
            weights = self.scenarios.get_column("weight").to_numpy()
            figures["max_weight"] = float(weights.max())
            figures["min_weight"] = float(weights.min())
        return figures


def frame_schema(settings: CurriculumSettings) -> dict[str, pl.DataType]:
    """The scenarios frame's columns, the same in every case (scored or uniform)."""
    schema: dict[str, pl.DataType] = {
        SCENARIO: pl.Date(),
        "first": pl.Date(),
        "last": pl.Date(),
        "rows": pl.Int64(),
    }
    schema |= {name: pl.Float64() for name in settings.regimes}
    for name in CURRICULUM_COMPONENTS:
        schema |= {f"{name}_raw": pl.Float64(), name: pl.Float64()}
    return schema | {"score": pl.Float64(), "weight": pl.Float64()}


def _complete(frame: pl.DataFrame, settings: CurriculumSettings) -> pl.DataFrame:
    """``frame`` with every column of :func:`frame_schema` (absent ones null), in its order."""
    schema = frame_schema(settings)
    return frame.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in schema.items()
        if name not in frame.columns
    ).select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _uniform(base: Curriculum, reason: str, settings: CurriculumSettings) -> Curriculum:
    """``base`` with weight 1 for every scenario and the reason why."""
    frame = _complete(base.scenarios.with_columns(weight=pl.lit(1.0)), settings)
    return replace(base, scenarios=frame, reason=reason)


def _analysis_features(
    settings: CurriculumSettings, training: TrainingConfig, features: pl.DataFrame
) -> list[str]:
    chosen = settings.analysis_features or training.features or feature_columns(features)
    regimes = [r.column for r in settings.regimes.values()]
    return list(dict.fromkeys([*chosen, *regimes]))


def round_curriculum(
    records: Sequence[RoundRecord],
    features: pl.DataFrame,
    labels: pl.DataFrame,
    load: ModelLoader,
    cutoff: date,
    training: TrainingConfig,
    settings: CurriculumSettings,
) -> Curriculum:
    """The curriculum of the round whose training cutoff is ``cutoff``: its training rows'
    scenarios scored against the errors of the champions of the last
    ``settings.history_rounds`` rounds in ``records`` that started before the cutoff."""
    if not settings.enabled:
        empty = pl.DataFrame(schema=frame_schema(settings))
        return Curriculum(cutoff, settings.period, empty, "curriculum.enabled is false")
    label = training.labels[0]
    analysis_features = _analysis_features(settings, training, features)
    rows = window_rows(
        features, labels, label, cutoff, training.window_days, analysis_features, settings.period
    )
    scenarios = describe_scenarios(rows, settings.regimes)
    base = Curriculum(cutoff, settings.period, scenarios)
    if scenarios.height < 2:
        return _uniform(
            base,
            f"the training window before {cutoff} holds {scenarios.height} scenario(s): "
            "nothing to weigh one against another",
            settings,
        )
    earlier = sorted((r for r in records if r.start < cutoff), key=lambda r: r.start)
    recent = earlier[-settings.history_rounds :]
    errors = champion_errors(recent, features, labels, label, load, cutoff).filter(
        pl.col("date") >= cutoff - timedelta(days=training.window_days)
    )
    base = replace(
        base,
        error_days=errors.height,
        champions=tuple(dict.fromkeys(errors.get_column("version").to_list())),
    )
    if errors.height < settings.min_error_days:
        return _uniform(
            base,
            f"{errors.height} out-of-sample error day(s) of a champion known before {cutoff} "
            f"({len(recent)} earlier round record(s) read), fewer than "
            f"curriculum.min_error_days ({settings.min_error_days})",
            settings,
        )
    if not bool((errors.get_column("error") != 0).any()):
        return _uniform(
            base,
            f"the champions' {errors.height} error days before {cutoff} are all exactly 0",
            settings,
        )
    analysis = analyze_errors(
        errors, rows, analysis_features, settings.quantiles, settings.shrinkage_days
    )
    return _scored(base, settings, rows, analysis)


def _scored(
    base: Curriculum, settings: CurriculumSettings, rows: pl.DataFrame, analysis: ErrorAnalysis
) -> Curriculum:
    scenarios = base.scenarios
    scored = scenario_scores(rows, scenarios, analysis, settings)
    frame = scenarios.join(scored.frame, on=SCENARIO, how="left")
    base = replace(
        base,
        scenarios=frame,
        bins=analysis.table,
        by_regime=analysis.by_scenario().join(scenarios, on=SCENARIO, how="left"),
        notes=scored.notes,
    )
    score = frame.get_column("score").to_numpy()
    if not np.ptp(score) > 0:
        return _uniform(
            base, f"all {frame.height} scenarios score {score[0]:.4g}: nothing to weigh", settings
        )
    weights = scenario_weights(
        score, frame.get_column("rows").to_numpy().astype(np.float64), settings.max_weight_ratio
    )
    return replace(base, scenarios=_complete(frame.with_columns(weight=weights), settings))


COMPONENT_MEANINGS = {
    "error_reduction": "mean excess error of its rows' feature bins (where the champions erred more)",
    "coverage_expansion": "share of its regime values outside what the champions' error days covered",
    "edge_case_exposure": "share of its rows with a regime value outside the window's quantiles",
    "novelty": "mean distance to its nearest scenarios in standardized regime space",
}


def scenario_descriptions(settings: CurriculumSettings) -> dict[str, str]:
    """What each column of ``curriculum/curriculum`` holds, regimes from ``settings``."""
    described = {
        "scenario": "the scenario: a calendar period of the round's training window",
        "first": "its first training day",
        "last": "its last training day",
        "rows": "its training rows",
        "score": "the weighted sum of the scaled components (curriculum.score_weights)",
        "weight": "the training weight of each of its rows (mean 1 over the fit rows)",
        "cutoff": "the round's training cutoff",
        "reason": "why the weights are uniform (null: scored)",
        "round": "the round",
        "date": "the round's first day (the partition)",
    }
    for name, regime in settings.regimes.items():
        described[name] = f"regime: {regime.stat} of {regime.column} over its rows"
    for name, meaning in COMPONENT_MEANINGS.items():
        described[f"{name}_raw"] = meaning
        described[name] = f"{name.replace('_', ' ')} scaled to [0, 1] across the scenarios"
    return described
