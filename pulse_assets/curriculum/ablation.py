"""The curriculum's ablation: the walk-forward trained with the curriculum against the same
walk-forward with uniform weights (same data, config and seeds), both out of sample.

Input: each arm's out-of-sample errors per day (``date``, ``round``, ``error`` = forecast -
actual, the champion's retrodiction of each arm). Output: the mean loss difference
(curriculum minus uniform: below 0 when the curriculum helped), the difference per round, and
a two-sided Diebold-Mariano test over every day, with a one-line verdict that says so whether
the curriculum helped or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pulse_assets.curriculum.scenarios import CurriculumError, require
from pulse_assets.evaluation.significance import (
    DieboldMarianoResult,
    Loss,
    diebold_mariano,
    loss_differential,
)


@dataclass(frozen=True)
class Ablation:
    """Curriculum against uniform weights: differences are curriculum minus uniform."""

    days: int
    curriculum_loss: float
    uniform_loss: float
    mean_difference: float
    relative_difference: float
    per_round: pl.DataFrame  # round, days, curriculum_loss, uniform_loss, difference
    test: DieboldMarianoResult
    level: float

    @property
    def significant(self) -> bool:
        return self.test.p_value < self.level

    @property
    def verdict(self) -> str:
        loss = self.test.loss.value
        change = f"{abs(self.relative_difference):.1%}"
        direction = "lower" if self.mean_difference < 0 else "higher"
        rounds_won = int((self.per_round.get_column("difference") < 0).sum())
        head = (
            f"curriculum vs uniform weights over {self.days} out-of-sample days: mean {loss} "
            f"loss {change} {direction} with the curriculum (DM p = {self.test.p_value:.3g})"
        )
        if self.per_round.height > 1:
            head += f", lower in {rounds_won} of {self.per_round.height} rounds"
        if not self.significant:
            return f"{head}: no significant difference at the {self.level:g} level"
        winner = "the curriculum helped" if self.mean_difference < 0 else "the curriculum hurt"
        return f"{head}: {winner}, significant at the {self.level:g} level"


def _paired(curriculum: pl.DataFrame, uniform: pl.DataFrame) -> pl.DataFrame:
    for name, frame in (("curriculum", curriculum), ("uniform", uniform)):
        require(frame, ["date", "round", "error"], f"the {name} arm's errors")
        if frame.get_column("date").is_duplicated().any():
            raise CurriculumError(f"the {name} arm's errors hold a day twice: one row per day")
    paired = curriculum.select("date", "round", "error").join(
        uniform.select("date", pl.col("round").alias("round_uniform"), "error"),
        on="date",
        how="full",
        suffix="_uniform",
        coalesce=True,
    )
    unpaired = paired.filter(pl.col("error").is_null() | pl.col("error_uniform").is_null())
    if unpaired.height:
        raise CurriculumError(
            f"{unpaired.height} day(s) (first {unpaired.get_column('date').min()!s}) have an "
            "error in one arm only: compare the two walk-forwards on the same days"
        )
    if (paired.get_column("round") != paired.get_column("round_uniform")).any():
        raise CurriculumError("the two arms put some days in different rounds: same rounds needed")
    return paired.sort("date")


def ablation(
    curriculum: pl.DataFrame,
    uniform: pl.DataFrame,
    loss: Loss = Loss.SQUARED,
    level: float = 0.05,
) -> Ablation:
    """Compare the two arms' per-day errors on the same days (see the module docstring)."""
    paired = _paired(curriculum, uniform)
    mine = paired.get_column("error").to_numpy().astype(np.float64)
    theirs = paired.get_column("error_uniform").to_numpy().astype(np.float64)
    zero = np.zeros_like(mine)
    own, other = loss_differential(mine, zero, loss), loss_differential(theirs, zero, loss)
    difference = loss_differential(mine, theirs, loss)
    if not other.mean() > 0:
        raise CurriculumError("the uniform arm's loss is 0 on every day: nothing to compare")
    per_round = (
        paired.select(
            "round",
            pl.Series("curriculum_loss", own),
            pl.Series("uniform_loss", other),
            pl.Series("difference", difference),
        )
        .group_by("round")
        .agg(
            pl.len().cast(pl.Int64).alias("days"),
            pl.col("curriculum_loss").mean(),
            pl.col("uniform_loss").mean(),
            pl.col("difference").mean(),
        )
        .sort("round")
    )
    return Ablation(
        days=difference.size,
        curriculum_loss=float(own.mean()),
        uniform_loss=float(other.mean()),
        mean_difference=float(difference.mean()),
        relative_difference=float(difference.mean() / other.mean()),
        per_round=per_round,
        test=diebold_mariano(mine, theirs, loss),
        level=level,
    )
