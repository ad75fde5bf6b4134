"""The four scores of a scenario (the plan's ``_score_scenarios``), each from its rows:

- ``error_reduction``: the mean excess error of its rows, where the champion has erred more
  than on average out of sample (feature quantile bins of its errors, :mod:`.analysis`);
- ``coverage_expansion``: the share of its (row, regime column) values outside the range the
  champion's error days covered: territory the champion has not been tested on;
- ``edge_case_exposure``: the share of its rows with a regime column outside the training
  window's ``[q, 1 - q]`` quantiles;
- ``novelty``: the mean distance of its regime descriptors (standardized across scenarios) to
  its nearest ``k`` other scenarios: how unlike the rest of the window it is.

Each raw score (kept as ``<score>_raw``) is scaled to [0, 1] across the round's scenarios
(min-max), so the configured weights, normalized to sum 1, say how much each counts; a score
equal for every scenario carries no information, scales to 0 and is named in the notes.
``score`` is their weighted sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.spatial.distance import cdist

from pulse_assets.config import CURRICULUM_COMPONENTS, CurriculumSettings
from pulse_assets.curriculum.analysis import ErrorAnalysis
from pulse_assets.curriculum.scenarios import SCENARIO, require


@dataclass(frozen=True)
class Scored:
    """Scenarios with their raw and scaled scores and the total, and what was noticed."""

    frame: pl.DataFrame
    notes: tuple[str, ...]


def _per_scenario(rows: pl.DataFrame, values: np.ndarray, name: str) -> pl.DataFrame:
    """Mean of a per-row value over each scenario's rows."""
    return (
        rows.select(SCENARIO)
        .with_columns(pl.Series(name, values.astype(np.float64)))
        .group_by(SCENARIO)
        .agg(pl.col(name).mean())
    )


def outside_share(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per row: the share of its columns whose value lies outside ``[low, high]``."""
    return ((values < low) | (values > high)).mean(axis=1)


def edge_rows(values: np.ndarray, quantile: float) -> np.ndarray:
    """Per row: 1.0 when any column lies outside the columns' ``[q, 1 - q]`` quantiles."""
    low = np.quantile(values, quantile, axis=0)
    high = np.quantile(values, 1.0 - quantile, axis=0)
    return ((values < low) | (values > high)).any(axis=1).astype(np.float64)


def novelty(descriptors: np.ndarray, neighbours: int) -> np.ndarray:
    """Mean Euclidean distance of each scenario to its ``neighbours`` nearest others, in
    descriptors standardized across scenarios (a constant descriptor adds nothing)."""
    count = descriptors.shape[0]
    if count < 2:
        return np.zeros(count)
    spread = descriptors.std(axis=0)
    scaled = (descriptors - descriptors.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    distances = cdist(scaled, scaled)
    np.fill_diagonal(distances, np.inf)
    k = min(neighbours, count - 1)
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)


def min_max(values: np.ndarray) -> np.ndarray | None:
    """``values`` scaled to [0, 1]; None when they are all equal (no information)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return None
    return (values - low) / (high - low)


def raw_scores(
    rows: pl.DataFrame,
    scenarios: pl.DataFrame,
    analysis: ErrorAnalysis,
    regime_columns: Sequence[str],
    descriptors: Sequence[str],
    edge_quantile: float,
    neighbours: int,
) -> pl.DataFrame:
    """scenario and the four raw scores, for the scenarios of ``scenarios`` (their rows in
    ``rows``: date, scenario, the regime columns and the analysis features)."""
    require(rows, [SCENARIO, *regime_columns], "the training rows")
    values = rows.select(regime_columns).to_numpy().astype(np.float64)
    covered = analysis.days.select(regime_columns).to_numpy().astype(np.float64)
    parts = [
        _per_scenario(rows, analysis.row_excess(rows), "error_reduction_raw"),
        _per_scenario(
            rows,
            outside_share(values, covered.min(axis=0), covered.max(axis=0)),
            "coverage_expansion_raw",
        ),
        _per_scenario(rows, edge_rows(values, edge_quantile), "edge_case_exposure_raw"),
    ]
    frame = scenarios.select(SCENARIO)
    for part in parts:
        frame = frame.join(part, on=SCENARIO, how="left")
    described = scenarios.select(descriptors).to_numpy().astype(np.float64)
    return frame.with_columns(pl.Series("novelty_raw", novelty(described, neighbours)))


def total_scores(raw: pl.DataFrame, weights: Mapping[str, float]) -> Scored:
    """Each raw score scaled to [0, 1] across scenarios, and ``score``, their weighted sum."""
    notes, scaled = [], []
    total = np.zeros(raw.height)
    for name in CURRICULUM_COMPONENTS:
        values = raw.get_column(f"{name}_raw").to_numpy().astype(np.float64)
        unit = min_max(values)
        if unit is None:
            notes.append(f"{name} is {values[0]:.4g} for every scenario: it scores 0 for all")
            unit = np.zeros(raw.height)
        scaled.append(pl.Series(name, unit))
        total += weights.get(name, 0.0) * unit
    frame = raw.with_columns(*scaled, pl.Series("score", total))
    return Scored(frame, tuple(notes))


def scenario_scores(
    rows: pl.DataFrame,
    scenarios: pl.DataFrame,
    analysis: ErrorAnalysis,
    settings: CurriculumSettings,
) -> Scored:
    """The four scores of every scenario and their weighted total, as the settings ask."""
    raw = raw_scores(
        rows,
        scenarios,
        analysis,
        list(dict.fromkeys(r.column for r in settings.regimes.values())),
        list(settings.regimes),
        settings.edge_quantile,
        settings.novelty_neighbours,
    )
    return total_scores(raw, settings.score_weights)
