"""The registry's version lineage over the walk-forward rounds (matplotlib PNG, Agg).

Read from models/forecast_model (one :class:`pulse_assets.training.rounds.RoundRecord` per
round): at each round's start, the champion serving it (a step line) and the challenger the
round trained (a dot: filled when trained, hollow when the same data and config gave an
existing version, a grey x when nothing new was trained). A promotion (the round's champion
is the previous round's challenger that beat its champion in the shadow) is a star with the
promoted version's number.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from pulse_assets.evaluation.charts import (  # noqa: E402
    WIDTH,
    ChartInputError,
    date_axis,
    legend_outside,
    require_columns,
    require_rows,
    save_figure,
)

RECORD_COLUMNS = ["round", "start", "champion", "challenger", "promoted", "trained", "duplicate_of"]
TRAINED, DUPLICATE, NOT_TRAINED = "trained", "duplicate", "not trained"
CHALLENGER_COLOR = "#ff7f0e"


def lineage_points(records: pl.DataFrame) -> pl.DataFrame:
    """``round, start, champion_no, challenger_no, challenger_kind, promoted``, by start.

    ``challenger_kind``: ``trained`` (a new version), ``duplicate`` (an existing version had
    the same data and config) or ``not trained`` (no new version and no duplicate named)."""
    require_columns(records, RECORD_COLUMNS, "models/forecast_model")
    require_rows(records, "round in models/forecast_model")
    points = records.sort("start").select(
        "round",
        "start",
        pl.col("champion").cast(pl.Int64, strict=False).alias("champion_no"),
        pl.col("challenger").cast(pl.Int64, strict=False).alias("challenger_no"),
        pl.when(pl.col("trained"))
        .then(pl.lit(TRAINED))
        .when(pl.col("duplicate_of").is_not_null())
        .then(pl.lit(DUPLICATE))
        .otherwise(pl.lit(NOT_TRAINED))
        .alias("challenger_kind"),
        pl.col("promoted").fill_null(False),
    )
    bad = records.filter(
        pl.col("champion").cast(pl.Int64, strict=False).is_null()
        | pl.col("challenger").cast(pl.Int64, strict=False).is_null()
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise ChartInputError(
            f"round {row['round']} names champion {row['champion']!r} and challenger "
            f"{row['challenger']!r}: registry versions are whole numbers; the lineage chart "
            "reads the models/forecast_model frame"
        )
    return points


def _annotate_promotions(ax: Axes, promoted: pl.DataFrame) -> None:
    for day, version in promoted.select("start", "champion_no").iter_rows():
        ax.annotate(
            f"v{version}",
            (day, version),
            xytext=(7, -13),  # below right: the round's challenger (a higher version) is above
            textcoords="offset points",
            ha="left",
            fontsize=8,
            color="#b8860b",
            fontweight="bold",
        )


def lineage_chart(records: pl.DataFrame, path: Path) -> Path:
    """Champion (step line) and challenger (dots) version per round start; promotions as stars
    annotated with the promoted version."""
    points = lineage_points(records)
    starts = points["start"].to_list()
    gaps = points["start"].diff().dt.total_days().drop_nulls()
    last_round = timedelta(days=float(gaps.median()) if gaps.len() else 30.0)  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(WIDTH, 5.5), layout="constrained")
    ax.step(  # the last round's champion serves until the round ends: one more step
        [*starts, starts[-1] + last_round],
        [*points["champion_no"].to_list(), points["champion_no"][-1]],
        where="post",
        color="#1f77b4",
        linewidth=2.0,
        label="champion in service",
    )
    looks: dict[str, dict[str, object]] = {
        TRAINED: {"marker": "o", "color": CHALLENGER_COLOR},
        DUPLICATE: {"marker": "o", "facecolors": "none", "edgecolors": CHALLENGER_COLOR},
        NOT_TRAINED: {"marker": "x", "color": "#7f7f7f"},
    }
    for kind, look in looks.items():
        rows = points.filter(pl.col("challenger_kind") == kind)
        if rows.height:
            name = "duplicate of an existing version" if kind == DUPLICATE else kind
            ax.scatter(
                rows["start"].to_list(),
                rows["challenger_no"].to_list(),
                s=30,
                label=f"challenger: {name}",
                zorder=3,
                **look,  # type: ignore[arg-type]
            )
    promoted = points.filter(pl.col("promoted"))
    ax.scatter(
        promoted["start"].to_list(),
        promoted["champion_no"].to_list(),
        s=140,
        marker="*",
        color="#ffd700",
        edgecolors="#b8860b",
        label="promotion",
        zorder=4,
    )
    _annotate_promotions(ax, promoted)
    ax.set_title(
        f"Model lineage: {points.height} rounds, {promoted.height} promotion(s), "
        f"{points['challenger_no'].n_unique()} distinct challengers",
        fontsize=10,
    )
    ax.set_xlabel("round start")
    ax.set_ylabel("registry version")
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.grid(alpha=0.3)
    date_axis(ax)
    legend_outside(ax)
    return save_figure(fig, path)
