"""Charts of the curriculum (matplotlib PNG, Agg): a round's scenario weights with the scores
behind them, and the ablation's loss difference per round."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from pulse_assets.config import CURRICULUM_COMPONENTS  # noqa: E402
from pulse_assets.curriculum.ablation import Ablation  # noqa: E402
from pulse_assets.curriculum.weights import Curriculum  # noqa: E402
from pulse_assets.evaluation.charts import (  # noqa: E402
    WIDTH,
    ChartInputError,
    legend_outside,
    save_figure,
)

COMPONENT_COLORS = {
    "error_reduction": "#d62728",
    "coverage_expansion": "#1f77b4",
    "edge_case_exposure": "#ff7f0e",
    "novelty": "#2ca02c",
}


def _labels(scenarios: pl.DataFrame) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in scenarios.get_column("scenario").to_list()]


def _ticks(ax: plt.Axes, labels: list[str]) -> None:
    step = max(1, -(-len(labels) // 30))
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels(labels[::step], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(labels) - 0.3)


def curriculum_chart(curriculum: Curriculum, weights: dict[str, float], path: Path) -> Path:
    """Top: each scenario's row weight (mean 1 over the rows). Bottom, when it was scored: its
    score as the stacked weighted scores (``weights``: the normalized score weights)."""
    scenarios = curriculum.scenarios
    if scenarios.height == 0:
        raise ChartInputError(
            f"the curriculum of {curriculum.cutoff} has no scenario ({curriculum.reason}): "
            "nothing to chart"
        )
    labels = _labels(scenarios)
    x = np.arange(len(labels))
    scored = not scenarios.get_column("score").is_null().any()
    fig, axes = plt.subplots(
        2 if scored else 1,
        1,
        figsize=(WIDTH, 6.0 if scored else 3.4),
        sharex=True,
        layout="constrained",
        squeeze=False,
    )
    top = axes[0, 0]
    top.bar(x, scenarios.get_column("weight").to_numpy(), color="#555555", width=0.8)
    top.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    top.set_ylabel("row weight")
    title = f"Curriculum for the round with cutoff {curriculum.cutoff}"
    if curriculum.reason:
        title += "\n" + textwrap.fill(f"uniform weights: {curriculum.reason}", 120)
    else:
        title += f" ({curriculum.error_days} out-of-sample error days of the champions)"
    top.set_title(title, fontsize=10)
    if scored:
        bottom = axes[1, 0]
        base = np.zeros(len(labels))
        for name in CURRICULUM_COMPONENTS:
            part = weights.get(name, 0.0) * scenarios.get_column(name).to_numpy()
            bottom.bar(x, part, bottom=base, color=COMPONENT_COLORS[name], width=0.8, label=name)
            base += part
        bottom.set_ylabel("score (weighted parts)")
        legend_outside(bottom)
    _ticks(axes[-1, 0], labels)
    axes[-1, 0].set_xlabel("scenario (first day of its period)")
    return save_figure(fig, path)


def ablation_chart(ablation: Ablation, path: Path) -> Path:
    """Mean loss difference per round, curriculum minus uniform (below 0: the curriculum was
    better that round), with the overall verdict in the title."""
    rounds = ablation.per_round
    if rounds.height == 0:
        raise ChartInputError("the ablation has no round: nothing to chart")
    difference = rounds.get_column("difference").to_numpy()
    x = np.arange(rounds.height)
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0), layout="constrained")
    colors = np.where(difference < 0, "#2ca02c", "#d62728")
    ax.bar(x, difference, color=colors, width=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"mean {ablation.test.loss.value} loss difference")
    ax.set_title(
        f"Curriculum minus uniform weights per round (green: curriculum better); overall "
        f"{ablation.relative_difference:+.1%}, DM p = {ablation.test.p_value:.3g}",
        fontsize=10,
    )
    _ticks(ax, [str(r) for r in rounds.get_column("round").to_list()])
    ax.set_xlabel("round")
    return save_figure(fig, path)
