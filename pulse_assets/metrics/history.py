"""The plan's MetricsStore queries over ``model_metrics``: a model's history and a summary.

The store records a model's figures per scope ``<kind>:<forecaster>`` and window:

- ``round:<forecaster>``: the forecaster's skill over one round's days (and the champion's DM
  tests), written by ``evaluation/retrodiction``;
- ``cumulative:<forecaster>``: over every day from the first round through the round of the
  window, written by ``metrics/model_metrics``;
- ``recursive:champion`` (skill against the best baseline, trust delta) and
  ``recursive:rules`` (symbolic alignment), written by ``metrics/model_metrics``.

Every record's window starts on its round's first day, so ``round`` below is ``window_start``.
A round that was evaluated again is recorded again; the latest record of each (scope, round,
label, metric) is the one these queries read, so no figure is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import sqlalchemy as sa

from pulse_assets.metrics.forecast_skill import FORECAST_SKILL_NAMES
from pulse_assets.metrics.regression import MetricsError
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.storage.sql import model_metrics

HISTORY_SCHEMA = {
    "round": pl.Date,
    "window_end": pl.Date,
    "kind": pl.String,
    "forecaster": pl.String,
    "label": pl.String,
    "metric": pl.String,
    "value": pl.Float64,  # null: undefined (NaN is stored as NULL)
    "naive_value": pl.Float64,
    "days": pl.Int64,
    "model_version": pl.String,
}
KEY = ["kind", "forecaster", "round", "label", "metric"]


def _records(store: MetricsStore, model_name: str) -> pl.DataFrame:
    """Every record of ``model_name`` in insertion order, ``scope`` split into kind and name."""
    query = (
        sa.select(model_metrics)
        .where(model_metrics.c.model_name == model_name)
        .order_by(model_metrics.c.id)
    )
    with store.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    frame = pl.DataFrame(
        [
            {
                "round": row["window_start"],
                "window_end": row["window_end"],
                "kind": row["scope"].partition(":")[0],
                "forecaster": row["scope"].partition(":")[2],
                "label": row["label"],
                "metric": row["metric"],
                "value": row["value"],
                "naive_value": row["naive_value"],
                "days": row["rows"],
                "model_version": row["model_version"],
            }
            for row in rows
        ],
        schema=HISTORY_SCHEMA,
    )
    return frame.unique(subset=KEY, keep="last", maintain_order=True)


def model_history(
    store: MetricsStore,
    model_name: str,
    forecaster: str | None = None,
    metric: str | None = None,
    kind: str = "round",
) -> pl.DataFrame:
    """One row per round (and forecaster, label, metric) of ``model_name``'s figures of
    ``kind`` (``round``, ``cumulative`` or ``recursive``), latest record each, by round
    (columns :data:`HISTORY_SCHEMA`). Empty when nothing matches."""
    frame = _records(store, model_name).filter(pl.col("kind") == kind)
    if forecaster is not None:
        frame = frame.filter(pl.col("forecaster") == forecaster)
    if metric is not None:
        frame = frame.filter(pl.col("metric") == metric)
    return frame.sort("round", "forecaster", "label", "metric")


SUMMARY_SCHEMA = {
    "forecaster": pl.String,
    "label": pl.String,
    "metric": pl.String,
    "rounds": pl.UInt32,  # rounds with a defined value
    "mean": pl.Float64,  # over rounds, each round weighing the same
    "std": pl.Float64,
    "last": pl.Float64,
    "last_round": pl.Date,
    "best": pl.Float64,  # lowest: every summarized metric is a loss
    "best_round": pl.Date,
    "worst": pl.Float64,
    "worst_round": pl.Date,
    "rounds_won": pl.UInt32,  # rounds in which no forecaster had a lower value
    "cumulative": pl.Float64,  # over all days through the last round (null: not recorded)
}


def summary(
    store: MetricsStore, model_name: str, metrics: Sequence[str] = FORECAST_SKILL_NAMES
) -> pl.DataFrame:
    """Every forecaster's per-round ``metrics`` of ``model_name`` over all its rounds: mean,
    spread, last, best and worst round, how many rounds it won, and the cumulative value at
    the last round (columns :data:`SUMMARY_SCHEMA`). Only loss metrics (lower is better)."""
    unknown = sorted(set(metrics) - set(FORECAST_SKILL_NAMES))
    if unknown:
        raise MetricsError(
            f"summary ranks lower-is-better loss metrics {FORECAST_SKILL_NAMES} only, not {unknown}"
        )
    records = _records(store, model_name).filter(pl.col("metric").is_in(list(metrics)))
    per_round = records.filter((pl.col("kind") == "round") & pl.col("value").is_not_null())
    if per_round.height == 0:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    group = ["forecaster", "label", "metric"]
    won = (
        per_round.filter(pl.col("value") == pl.col("value").min().over("round", "label", "metric"))
        .group_by(group)
        .agg(pl.len().alias("rounds_won"))
    )
    ordered = per_round.sort("round")
    table = ordered.group_by(group).agg(
        pl.len().alias("rounds"),
        pl.col("value").mean().alias("mean"),
        pl.col("value").std().alias("std"),
        pl.col("value").last().alias("last"),
        pl.col("round").last().alias("last_round"),
        pl.col("value").min().alias("best"),
        pl.col("round").sort_by("value").first().alias("best_round"),
        pl.col("value").max().alias("worst"),
        pl.col("round").sort_by("value").last().alias("worst_round"),
    )
    cumulative = records.filter(pl.col("kind") == "cumulative").select(
        *group, pl.col("round").alias("last_round"), pl.col("value").alias("cumulative")
    )
    return (
        table.join(won, on=group, how="left")
        .join(cumulative, on=[*group, "last_round"], how="left")
        .with_columns(pl.col("rounds_won").fill_null(0))
        .select(list(SUMMARY_SCHEMA))
        .cast(pl.Schema(SUMMARY_SCHEMA))
        .sort("label", "metric", "mean")
    )
