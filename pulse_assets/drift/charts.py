"""The drift report as a feature x window heatmap (matplotlib PNG, Agg).

A window is the report's ``window`` column when it has one (e.g. the round), else the calendar
month of ``date``. Within a window a feature may be checked on many days; a cell shows the
strongest evidence of that window: the smallest q-value (as -log10 q) and the largest effect
size, and is marked when any check of the window called the feature drifted. The multivariate
MMD row (one test of all features together, on a run's latest day) is not a feature and is
left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from pulse_assets.drift.report import MULTIVARIATE_FEATURE  # noqa: E402
from pulse_assets.evaluation.charts import (  # noqa: E402
    WIDTH,
    ChartInputError,
    require_columns,
    require_rows,
    save_figure,
)

Q_FLOOR = 1e-10  # -log10 q is drawn up to 10: smaller q-values are all "overwhelming"
CELL_COLUMNS = ["feature", "window", "min_q", "effect", "drifted", "checks"]


class Effect(StrEnum):
    """The effect size a heatmap shows: PSI, or the Wasserstein distance / reference std."""

    PSI = "psi"
    WASSERSTEIN = "wasserstein"


EFFECT_TITLE = {
    Effect.PSI: "largest PSI (population stability index)",
    Effect.WASSERSTEIN: "largest Wasserstein distance / reference std",
}


def drift_cells(report: pl.DataFrame, effect: Effect = Effect.PSI) -> pl.DataFrame:
    """One row per (feature, window) checked: ``min_q`` (smallest q-value), ``effect``
    (largest effect size), ``drifted`` (any check drifted), ``checks`` (how many)."""
    require_columns(report, ["date", "feature", "q_value", effect.value, "drifted"], "drift report")
    features = report.filter(pl.col("feature") != MULTIVARIATE_FEATURE)
    if "kind" in features.columns:
        features = features.filter(pl.col("kind") != "multivariate")
    require_rows(features, "per-feature drift check in the drift report")
    window = (
        pl.col("window").cast(pl.String)
        if "window" in features.columns
        else pl.col("date").dt.strftime("%Y-%m")
    )
    return (
        features.with_columns(window.alias("window"))
        .group_by("feature", "window")
        .agg(
            pl.col("q_value").min().alias("min_q"),
            pl.col(effect.value).max().alias("effect"),
            pl.col("drifted").any().alias("drifted"),
            pl.len().cast(pl.Int64).alias("checks"),
        )
        .select(CELL_COLUMNS)
        .sort("feature", "window")
    )


def feature_order(cells: pl.DataFrame) -> list[str]:
    """Features by the number of windows they drifted in (most first), then by name."""
    counts = cells.group_by("feature").agg(pl.col("drifted").sum().alias("n"))
    return counts.sort(["n", "feature"], descending=[True, False])["feature"].to_list()


def window_order(report: pl.DataFrame, cells: pl.DataFrame) -> list[str]:
    """Windows in time order (by their first checked day)."""
    if "window" not in report.columns:
        return sorted(cells["window"].unique().to_list())
    first = report.group_by(pl.col("window").cast(pl.String)).agg(pl.col("date").min())
    return first.sort("date")["window"].to_list()


@dataclass(frozen=True)
class DriftGrid:
    features: list[str]
    windows: list[str]
    minus_log_q: npt.NDArray[np.float64]  # NaN where a feature was not checked in a window
    effect: npt.NDArray[np.float64]
    drifted: npt.NDArray[np.bool_]


def drift_grid(report: pl.DataFrame, effect: Effect = Effect.PSI) -> DriftGrid:
    """The heatmap's matrices, rows = features (most drifting first), columns = windows."""
    cells = drift_cells(report, effect)
    features, windows = feature_order(cells), window_order(report, cells)
    row = {f: k for k, f in enumerate(features)}
    column = {w: k for k, w in enumerate(windows)}
    shape = (len(features), len(windows))
    minus_log_q = np.full(shape, np.nan)
    sizes = np.full(shape, np.nan)
    drifted = np.zeros(shape, dtype=bool)
    for cell in cells.iter_rows(named=True):
        i, j = row[cell["feature"]], column[cell["window"]]
        q = cell["min_q"]
        minus_log_q[i, j] = -math.log10(max(q, Q_FLOOR)) if q is not None else np.nan
        sizes[i, j] = cell["effect"] if cell["effect"] is not None else np.nan
        drifted[i, j] = bool(cell["drifted"])
    return DriftGrid(features, windows, minus_log_q, sizes, drifted)


def effect_ceiling(effect: npt.NDArray[np.float64]) -> float:
    """The colour scale's top: the 95th percentile of the effect sizes, so a few huge ones
    do not wash out the rest (positive even when every effect is 0)."""
    finite = effect[np.isfinite(effect)]
    if finite.size == 0:
        return 1.0
    return max(float(np.percentile(finite, 95)), 1e-6)


def _panel(
    ax: Axes,
    grid: DriftGrid,
    values: npt.NDArray[np.float64],
    cmap: str,
    vmax: float,
    extend: Literal["neither", "max"],
) -> None:
    image = ax.imshow(
        np.ma.masked_invalid(values),
        aspect="auto",
        cmap=cmap,
        norm=Normalize(vmin=0.0, vmax=vmax),
        interpolation="nearest",
    )
    ax.figure.colorbar(image, ax=ax, pad=0.01, fraction=0.03, extend=extend)
    rows, columns = np.nonzero(grid.drifted)
    # white dots ringed in black read on the light and the dark end of both colour maps
    ax.scatter(columns, rows, marker="o", s=12, facecolors="white", edgecolors="black", lw=0.6)
    ax.set_yticks(range(len(grid.features)))
    ax.set_yticklabels(grid.features, fontsize=7)
    step = max(1, -(-len(grid.windows) // 30))
    ax.set_xticks(range(0, len(grid.windows), step))
    ax.set_xticklabels(grid.windows[::step], rotation=60, ha="right", fontsize=7)
    ax.set_facecolor("#eeeeee")  # windows where a feature was not checked


def drift_heatmap(report: pl.DataFrame, path: Path, effect: Effect = Effect.PSI) -> Path:
    """Feature x window heatmap: top, -log10 of the smallest q-value; bottom, the largest
    effect size (PSI by default). x marks a cell where a check called the feature drifted."""
    grid = drift_grid(report, effect)
    if np.isnan(grid.minus_log_q).all():
        raise ChartInputError("every q-value in the drift report is null: nothing to chart")
    height = min(4.0 + 0.36 * len(grid.features), 16.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH, height), layout="constrained")
    _panel(top, grid, grid.minus_log_q, "viridis", -math.log10(Q_FLOOR), "max")
    top.set_title(
        "Feature drift per window: -log10 of the smallest Benjamini-Hochberg q-value "
        f"(capped at {-math.log10(Q_FLOOR):g})\nwhite dot: drifted (q and an effect size past "
        "their thresholds) in at least one check of the window; grey: not checked",
        fontsize=10,
    )
    ceiling = effect_ceiling(grid.effect)
    _panel(bottom, grid, grid.effect, "magma_r", ceiling, "max")
    window_kind = "window" if "window" in report.columns else "calendar month"
    bottom.set_title(
        f"Effect size: {EFFECT_TITLE[effect]} per window (colour capped at {ceiling:.2g}, "
        "the 95th percentile)",
        fontsize=10,
    )
    for ax in (top, bottom):
        ax.set_ylabel("feature (most often drifted first)", fontsize=8)
    bottom.set_xlabel(window_kind)
    top.set_xlabel(window_kind)
    return save_figure(fig, path)
