"""A round's metrics from a small hand-made retrodiction of three rounds."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from pulse_assets.metrics.recursive import RecursiveMetricsSettings
from pulse_assets.metrics.rounds import FRAME_SCHEMA, NOT_WIRED, round_metrics

ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01"]
BASELINES = ("naive", "trailing_mean", "ewma", "garch")
FAST = RecursiveMetricsSettings(resamples=300, block_days=3)


def retrodiction() -> pl.DataFrame:
    """Ten days per round; the champion's errors shrink from round to round."""
    rng = np.random.default_rng(0)
    frames = []
    for k, key in enumerate(ROUNDS):
        first = date.fromisoformat(key)
        actual = 0.01 + 0.005 * rng.random(10)
        columns = {
            f"{name}_x": actual + 0.004 * (1 + j / 4) * rng.standard_normal(10)
            for j, name in enumerate(BASELINES)
        }
        columns = {name: np.abs(values) + 1e-4 for name, values in columns.items()}
        frames.append(
            pl.DataFrame(
                {
                    "date": [first + timedelta(days=n) for n in range(10)],
                    "actual_x": actual,
                    "forecast_x": actual + 0.004 / (k + 1) * rng.standard_normal(10),
                    "shadow_x": actual + 0.003 * rng.standard_normal(10),
                    **columns,
                    "model_version": str(k + 1),
                    "in_sample": False,
                    "round": key,
                }
            )
        )
    return pl.concat(frames)


def skill_by_hand(frame: pl.DataFrame) -> float:
    actual = frame["actual_x"].to_numpy()
    mse = {name: np.mean((frame[f"{name}_x"].to_numpy() - actual) ** 2) for name in BASELINES}
    return 1 - np.mean((frame["forecast_x"].to_numpy() - actual) ** 2) / min(mse.values())


def value(table: pl.DataFrame, scope: str, subject: str, metric: str):
    row = table.filter(
        (pl.col("scope") == scope) & (pl.col("subject") == subject) & (pl.col("metric") == metric)
    )
    assert row.height == 1, f"expected one {scope}/{subject}/{metric} row, got {row.height}"
    return row.row(0, named=True)


def test_the_first_round_has_no_trust_delta_and_says_why() -> None:
    metrics = round_metrics(retrodiction(), "x", ROUNDS[0], None, settings=FAST)
    table = metrics.to_frame()
    assert dict(table.schema) == FRAME_SCHEMA
    delta = value(table, "round", "champion", "trust_delta")
    assert delta["value"] is None and delta["note"].startswith("first round")
    alignment = value(table, "round", "rules", "alignment_share_toward")
    assert alignment["value"] is None and alignment["note"] == NOT_WIRED
    figures = metrics.figures()
    assert figures["trust_delta"] is None and figures["alignment"] == NOT_WIRED


def test_round_and_cumulative_figures_and_trust_delta_by_hand() -> None:
    frame = retrodiction()
    metrics = round_metrics(frame, "x", ROUNDS[1], ROUNDS[0], settings=FAST)
    table = metrics.to_frame()
    upto = frame.filter(pl.col("round") <= ROUNDS[1])
    cumulative = value(table, "cumulative", "champion", "rmse")
    errors = (upto["forecast_x"] - upto["actual_x"]).to_numpy()
    assert cumulative["value"] == pytest.approx(math.sqrt(np.mean(errors**2)), rel=1e-12)
    assert cumulative["days"] == 20
    own = frame.filter(pl.col("round") == ROUNDS[1])
    garch_mae = np.mean(np.abs((own["garch_x"] - own["actual_x"]).to_numpy()))
    assert value(table, "round", "garch", "mae")["value"] == pytest.approx(garch_mae, rel=1e-12)
    previous = frame.filter(pl.col("round") == ROUNDS[0])
    expected = skill_by_hand(own) - skill_by_hand(previous)
    delta = value(table, "round", "champion", "trust_delta")
    assert delta["value"] == pytest.approx(expected, rel=1e-10) and delta["note"] is None
    low = value(table, "round", "champion", "trust_delta_ci_low")["value"]
    high = value(table, "round", "champion", "trust_delta_ci_high")["value"]
    assert low < delta["value"] < high
    assert value(table, "round", "champion", "skill_vs_best_baseline")["value"] == pytest.approx(
        skill_by_hand(own), rel=1e-10
    )
    statistic = value(table, "cumulative", "champion", "dm_statistic_vs_garch_squared")
    assert statistic["days"] == 20 and math.isfinite(statistic["value"])


def test_later_rounds_in_the_input_change_nothing() -> None:
    frame = retrodiction()
    only = round_metrics(
        frame.filter(pl.col("round") <= ROUNDS[1]), "x", ROUNDS[1], ROUNDS[0], settings=FAST
    )
    more = round_metrics(frame, "x", ROUNDS[1], ROUNDS[0], settings=FAST)
    assert only.to_frame().equals(more.to_frame())


def test_symbolic_alignment_reads_the_rounds_own_impact_rows() -> None:
    frame = retrodiction()
    impact = pl.DataFrame(
        {
            "date": [date(2016, 7, 2), date(2016, 8, 2), date(2016, 8, 3)],
            "round": [ROUNDS[0], ROUNDS[1], ROUNDS[1]],
            "active_rule_ids": ["a", "a", "a"],
            "rules_fired": [1, 1, 0],
            "forecast_x": [0.02, 0.02, 0.02],
            "adjusted_x": [0.03, 0.015, 0.02],
            "actual_x": [0.01, 0.01, 0.01],
        }
    )
    metrics = round_metrics(frame, "x", ROUNDS[1], ROUNDS[0], impact, settings=FAST)
    assert metrics.alignment is not None and metrics.alignment.fired_days == 1
    table = metrics.to_frame()
    assert value(table, "round", "rules", "alignment_share_toward")["value"] == 1.0
    change = value(table, "round", "rules", "alignment_rmse_change")["value"]
    assert change == pytest.approx(0.005 - 0.01, rel=1e-9)
