"""The curriculum's effect on a set of retrodicted days (a round, or every round through it).

Each round's challenger trained with the curriculum's row weights is compared with its
*uniform-weight twin*: the same training (rows, warm start, seed, config) with every row
weighing the same, logged beside it. Both forecast the round's days out of sample, so the
difference of their losses on those days is what that round's curriculum did, free of the
rest of the loop (which champion served, which rules fired). The challenger's forecast is the
retrodiction's shadow column, or the champion's on days where the challenger *is* the champion
(the shadow column is null there). A challenger trained with uniform weights (a degenerate
curriculum, the first round) is its own twin: its days count with a difference of 0.

The comparison is :func:`pulse_assets.curriculum.ablation.ablation` on those two arms: mean
squared loss difference (weighted minus uniform: below 0 when the curriculum helped), its
share of the uniform arm's loss, the per-round differences and a two-sided Diebold-Mariano
test.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pulse_assets.curriculum.ablation import Ablation, ablation

TWIN_PREFIX = "uniform_twin"


@dataclass(frozen=True)
class CurriculumEffect:
    """The curriculum's effect over some days; ``result`` is None when it is undefined and
    ``note`` says why (no twin kept, or no challenger trained with curriculum weights)."""

    days: int  # days with the challenger's and its twin's forecast and the actual known
    weighted_days: int  # of those, days whose challenger was trained with curriculum weights
    result: Ablation | None
    note: str

    @property
    def outcome(self) -> str:
        return self.result.verdict if self.result is not None else self.note


def _arms(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """date, round, error (the challenger's), twin_error, on days where both are known."""
    actual = pl.col(f"actual_{label}")
    challenger = pl.coalesce(pl.col(f"shadow_{label}"), pl.col(f"forecast_{label}"))
    return frame.select(
        "date",
        "round",
        (challenger - actual).alias("error"),
        (pl.col(f"{TWIN_PREFIX}_{label}") - actual).alias("twin_error"),
    ).drop_nulls()


def curriculum_effect(frame: pl.DataFrame, label: str, level: float = 0.05) -> CurriculumEffect:
    """The curriculum's effect over the days of ``frame`` (retrodiction rows of one or more
    rounds, with ``round`` and ``uniform_twin_<label>``); see the module docstring."""
    if f"{TWIN_PREFIX}_{label}" not in frame.columns:
        return CurriculumEffect(
            0, 0, None, "the retrodiction has no uniform-weight twin column: re-materialize it"
        )
    arms = _arms(frame, label)
    weighted = int((arms.get_column("error") != arms.get_column("twin_error")).sum())
    if arms.height == 0:
        return CurriculumEffect(
            0,
            0,
            None,
            "no day with both the challenger's and its uniform-weight twin's forecast known "
            "(curriculum.uniform_twin: false, or the actuals are not known yet)",
        )
    if weighted == 0:
        return CurriculumEffect(
            arms.height,
            0,
            None,
            f"on all {arms.height} day(s) the challenger trained with uniform weights "
            "(a degenerate curriculum, see curriculum/curriculum): no curriculum effect",
        )
    result = ablation(
        arms.select("date", "round", "error"),
        arms.select("date", "round", pl.col("twin_error").alias("error")),
        level=level,
    )
    return CurriculumEffect(arms.height, weighted, result, result.verdict)
