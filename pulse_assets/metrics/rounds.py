"""A round's metrics (the plan's RecursiveTrainingMetrics): what ``metrics/model_metrics``
computes for round R from the retrodiction of the rounds up to R.

- every forecaster's RMSE, MAE, QLIKE and Theil's U2 over round R's days (scope ``round``) and
  over all days from the first round through R (scope ``cumulative``), each on the days where
  every baseline and the champion are known (:func:`~pulse_assets.evaluation.scoreboard.skill_table`);
- the champion's Diebold–Mariano statistics against each baseline, squared and absolute loss,
  over the round and cumulatively (:func:`~pulse_assets.evaluation.scoreboard.dm_table`);
- the champion's skill against the best baseline and the trust delta from the previous round
  (:mod:`pulse_assets.metrics.recursive`);
- symbolic alignment of the round's rule impact, when the rule-impact frame is given;
- the curriculum's effect: each challenger against its uniform-weight twin, over the round and
  cumulatively (:mod:`pulse_assets.metrics.curriculum_effect`).

Each figure is one row of a long frame (:data:`FRAME_SCHEMA`); an undefined figure has a null
value and a note saying why (first round: no trust delta; no rule fired: no alignment share).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from pulse_assets.evaluation.scoreboard import CHAMPION, dm_table, skill_table
from pulse_assets.metrics.curriculum_effect import CurriculumEffect, curriculum_effect
from pulse_assets.metrics.forecast_skill import FORECAST_SKILL_NAMES
from pulse_assets.metrics.recursive import (
    RecursiveMetricsSettings,
    RoundSkill,
    SymbolicAlignment,
    TrustDelta,
    round_skill,
    squared_losses,
    symbolic_alignment,
    trust_delta,
)

ROUND, CUMULATIVE = "round", "cumulative"
RULES = "rules"
CURRICULUM = "curriculum"
FRAME_SCHEMA = {
    "date": pl.Date,  # the round's first day (its partition key)
    "round": pl.String,
    "scope": pl.String,  # round: the round's days; cumulative: first round through this one
    "subject": pl.String,  # a forecaster, or "rules"
    "metric": pl.String,
    "value": pl.Float64,  # null: undefined (see note)
    "days": pl.Int64,
    "note": pl.String,
}
ALIGNMENT_FIGURES = (
    "fired_days",
    "toward_days",
    "away_days",
    "unchanged_days",
    "unresolved_days",
    "share_toward",
    "rmse_forecast",
    "rmse_adjusted",
    "rmse_change",
)
NOT_WIRED = "no rule-impact input: symbolic alignment not computed"
CURRICULUM_FIGURES = (
    "weighted_mse",
    "uniform_mse",
    "mse_difference",
    "relative_difference",
    "effect_dm_statistic",
    "effect_dm_p",
    "weighted_days",
)


@dataclass(frozen=True)
class RoundMetrics:
    """Everything ``metrics/model_metrics`` reports for one round."""

    round: str
    first_round: str
    skill: pl.DataFrame  # skill_table of the round
    cumulative_skill: pl.DataFrame
    dm: pl.DataFrame  # dm_table of the round
    cumulative_dm: pl.DataFrame
    round_skill: RoundSkill | None
    trust: TrustDelta | None
    trust_note: str | None  # why there is no trust delta
    alignment: SymbolicAlignment | None  # None: no rule-impact input
    curriculum: CurriculumEffect
    cumulative_curriculum: CurriculumEffect

    def to_frame(self) -> pl.DataFrame:
        rows = [
            *_skill_rows(self.skill, ROUND),
            *_skill_rows(self.cumulative_skill, CUMULATIVE),
            *_dm_rows(self.dm, ROUND),
            *_dm_rows(self.cumulative_dm, CUMULATIVE),
            *self._trust_rows(),
            *self._alignment_rows(),
            *_curriculum_rows(self.curriculum, ROUND),
            *_curriculum_rows(self.cumulative_curriculum, CUMULATIVE),
        ]
        day = date.fromisoformat(self.round)
        frame = pl.DataFrame(
            [{"date": day, "round": self.round} | row for row in rows], schema=FRAME_SCHEMA
        )
        return frame.with_columns(pl.col("value").fill_nan(None))

    def _trust_rows(self) -> list[dict[str, Any]]:
        """Skill against the best baseline (its name in the note) and the trust delta (why
        there is none in the note); a note sits on the headline row of each only."""
        skill, trust = self.round_skill, self.trust
        skill_note = f"best baseline: {skill.best_baseline}" if skill else "no day scored"
        skill_days = skill.days if skill else None
        trust_days = trust.current.days if trust else None
        return [
            _row(
                ROUND,
                CHAMPION,
                "skill_vs_best_baseline",
                _get(skill, "skill"),
                skill_days,
                skill_note,
            ),
            _row(ROUND, CHAMPION, "mse", _get(skill, "champion_mse"), skill_days),
            _row(
                ROUND, CHAMPION, "best_baseline_mse", _get(skill, "best_baseline_mse"), skill_days
            ),
            _row(ROUND, CHAMPION, "trust_delta", _get(trust, "delta"), trust_days, self.trust_note),
            _row(ROUND, CHAMPION, "trust_delta_ci_low", _get(trust, "ci_low"), trust_days),
            _row(ROUND, CHAMPION, "trust_delta_ci_high", _get(trust, "ci_high"), trust_days),
        ]

    def _alignment_rows(self) -> list[dict[str, Any]]:
        """Symbolic alignment's figures; its outcome in words on the share's row."""
        aligned = self.alignment
        if aligned is None:
            return [_row(ROUND, RULES, "alignment_share_toward", None, None, NOT_WIRED)]
        return [
            _row(
                ROUND,
                RULES,
                f"alignment_{name}",
                getattr(aligned, name),
                aligned.fired_days,
                aligned.outcome if name == "share_toward" else None,
            )
            for name in ALIGNMENT_FIGURES
        ]

    def figures(self) -> dict[str, Any]:
        """Flat figures for the round's observation: ``<forecaster>_<metric>`` for the round,
        ``cumulative_<forecaster>_<metric>``, the champion's DM tests, skill, trust delta and
        alignment by name; None where undefined."""
        figures: dict[str, Any] = {"first_round": self.first_round}
        for row in self.to_frame().iter_rows(named=True):
            prefix = "cumulative_" if row["scope"] == CUMULATIVE else ""
            subject = (
                ""
                if row["metric"].startswith(("dm_", "trust_", "alignment_"))
                else (f"{row['subject']}_")
            )
            figures[f"{prefix}{subject}{row['metric']}"] = row["value"]
        figures["best_baseline"] = self.round_skill.best_baseline if self.round_skill else None
        figures["trust_delta_note"] = self.trust_note
        figures["alignment"] = self.alignment.outcome if self.alignment else NOT_WIRED
        figures["curriculum_effect"] = self.curriculum.outcome
        figures["cumulative_curriculum_effect"] = self.cumulative_curriculum.outcome
        return figures


def _get(result: object | None, field: str) -> float | None:
    return None if result is None else float(getattr(result, field))


def _row(
    scope: str,
    subject: str,
    metric: str,
    value: float | int | None,
    days: int | None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "scope": scope,
        "subject": subject,
        "metric": metric,
        "value": None if value is None else float(value),
        "days": days,
        "note": note,
    }


def _curriculum_rows(effect: CurriculumEffect, scope: str) -> list[dict[str, Any]]:
    """The effect's figures (null where undefined); its verdict or why not on the first."""
    result = effect.result
    values: dict[str, float | None] = dict.fromkeys(CURRICULUM_FIGURES)
    values["weighted_days"] = effect.weighted_days
    if result is not None:
        values |= {
            "weighted_mse": result.curriculum_loss,
            "uniform_mse": result.uniform_loss,
            "mse_difference": result.mean_difference,
            "relative_difference": result.relative_difference,
            "effect_dm_statistic": result.test.statistic,
            "effect_dm_p": result.test.p_value,
        }
    return [
        _row(scope, CURRICULUM, name, values[name], effect.days, effect.outcome if i == 0 else None)
        for i, name in enumerate(CURRICULUM_FIGURES)
    ]


def _skill_rows(skill: pl.DataFrame, scope: str) -> list[dict[str, Any]]:
    return [
        _row(scope, row["forecaster"], metric, row[metric], row["days"], None)
        for row in skill.iter_rows(named=True)
        for metric in FORECAST_SKILL_NAMES
    ]


def _dm_rows(dm: pl.DataFrame, scope: str) -> list[dict[str, Any]]:
    return [
        _row(
            scope,
            CHAMPION,
            f"dm_{key}_vs_{row['baseline']}_{row['loss']}",
            row[column],
            row["days"],
            None,
        )
        for row in dm.iter_rows(named=True)
        for key, column in (("statistic", "dm_statistic"), ("p", "p_value"))
    ]


def _trust(
    previous: pl.DataFrame | None, current: pl.DataFrame, settings: RecursiveMetricsSettings
) -> tuple[TrustDelta | None, str | None]:
    """The trust delta, or why there is none (the preconditions, checked before asking)."""
    if previous is None:
        return None, "first round: no previous round to compare with"
    short = [
        f"{role} round has {frame.height} scored day(s)"
        for role, frame in (("the previous", previous), ("this", current))
        if frame.height < settings.min_days
    ]
    if short:
        return None, f"{'; '.join(short)}, fewer than min_days = {settings.min_days}"
    return trust_delta(previous, current, settings=settings), None


def round_metrics(
    retrodiction: pl.DataFrame,
    label: str,
    round_key: str,
    previous_key: str | None,
    rule_impact: pl.DataFrame | None = None,
    settings: RecursiveMetricsSettings | None = None,
) -> RoundMetrics:
    """Round ``round_key``'s metrics from ``retrodiction`` (rows of every round from the first
    through ``round_key``, with ``round``; later rows are ignored); ``previous_key`` is the
    round before it (None for the first round); ``rule_impact`` holds the round's rule-impact
    rows (columns of :func:`~pulse_assets.metrics.recursive.symbolic_alignment`)."""
    settings = settings or RecursiveMetricsSettings()
    upto = retrodiction.filter(pl.col("round") <= round_key).sort("date")
    own = upto.filter(pl.col("round") == round_key)
    losses = squared_losses(own, label)
    previous = (
        squared_losses(upto.filter(pl.col("round") == previous_key), label)
        if previous_key is not None
        else None
    )
    trust, note = _trust(previous, losses, settings)
    impact = rule_impact.filter(pl.col("round") == round_key) if rule_impact is not None else None
    return RoundMetrics(
        round=round_key,
        first_round=str(upto.get_column("round").min()) if upto.height else round_key,
        skill=skill_table(own, label),
        cumulative_skill=skill_table(upto, label),
        dm=dm_table(own, label),
        cumulative_dm=dm_table(upto, label),
        round_skill=round_skill(losses) if losses.height else None,
        trust=trust,
        trust_note=note,
        alignment=symbolic_alignment(impact, label) if impact is not None else None,
        curriculum=curriculum_effect(own, label, 1 - settings.confidence),
        cumulative_curriculum=curriculum_effect(upto, label, 1 - settings.confidence),
    )
