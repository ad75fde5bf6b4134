"""The drift heatmap: cells aggregate a window's checks by hand-checkable rules; it renders."""

import math
from datetime import date, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from pulse_assets.drift.charts import (
    Effect,
    drift_cells,
    drift_grid,
    drift_heatmap,
    effect_ceiling,
    feature_order,
)
from pulse_assets.drift.report import MULTIVARIATE_FEATURE, REPORT_SCHEMA
from pulse_assets.evaluation.charts import ChartInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def report(rows: list[tuple[date, str, float, float, float, bool]]) -> pl.DataFrame:
    """A drift report (its real schema) from (date, feature, q, psi, wasserstein, drifted)."""
    return pl.DataFrame(
        [
            {
                "date": day,
                "champion_version": "3",
                "feature": feature,
                "kind": "numeric",
                "statistic": 0.1,
                "p_value": q,
                "q_value": q,
                "psi": psi,
                "wasserstein": wasserstein,
                "reference_n": 400,
                "current_n": 60,
                "drifted": drifted,
                "note": "",
            }
            for day, feature, q, psi, wasserstein, drifted in rows
        ],
        schema=REPORT_SCHEMA,
    )


JAN, FEB = date(2016, 1, 5), date(2016, 2, 3)
SMALL = pl.concat(
    [
        report(
            [
                (JAN, "vol", 0.5, 0.05, 0.1, False),
                (JAN + timedelta(days=1), "vol", 1e-3, 0.40, 0.2, True),
                (FEB, "vol", 0.02, 0.30, 0.7, True),
                (JAN, "rsi", 0.9, 0.01, 0.05, False),
                (FEB, "rsi", 1e-14, 0.20, 0.6, True),
                (FEB, "aaa", 0.8, 0.02, 0.01, False),
            ]
        ),
        report([(FEB, MULTIVARIATE_FEATURE, 0.001, 0.0, 0.0, True)]).with_columns(
            pl.lit("multivariate").alias("kind")
        ),
    ]
)


def test_a_cell_holds_the_windows_smallest_q_largest_effect_and_any_drift():
    cells = drift_cells(SMALL)
    by_key = {(r["feature"], r["window"]): r for r in cells.to_dicts()}
    assert set(by_key) == {
        ("vol", "2016-01"),
        ("vol", "2016-02"),
        ("rsi", "2016-01"),
        ("rsi", "2016-02"),
        ("aaa", "2016-02"),
    }  # the multivariate row is not a feature
    vol = by_key[("vol", "2016-01")]
    assert (vol["min_q"], vol["effect"], vol["drifted"], vol["checks"]) == (1e-3, 0.40, True, 2)
    assert drift_cells(SMALL, Effect.WASSERSTEIN).filter(
        (pl.col("feature") == "vol") & (pl.col("window") == "2016-02")
    )["effect"].to_list() == [0.7]


def test_features_are_ordered_by_how_often_they_drift_then_by_name():
    assert feature_order(drift_cells(SMALL)) == ["vol", "rsi", "aaa"]


def test_the_grid_is_minus_log10_q_floored_with_gaps_for_unchecked_windows():
    grid = drift_grid(SMALL)
    assert grid.features == ["vol", "rsi", "aaa"]
    assert grid.windows == ["2016-01", "2016-02"]
    assert grid.minus_log_q[0].tolist() == pytest.approx([3.0, -math.log10(0.02)])
    assert grid.minus_log_q[1, 1] == pytest.approx(10.0)  # q = 1e-14 drawn at the 1e-10 floor
    assert math.isnan(grid.minus_log_q[2, 0]) and math.isnan(grid.effect[2, 0])
    assert grid.drifted.tolist() == [[True, True], [False, True], [False, False]]


def test_a_window_column_replaces_the_calendar_month():
    windowed = SMALL.with_columns(
        pl.when(pl.col("date") < FEB)
        .then(pl.lit("round-9"))
        .otherwise(pl.lit("round-10"))
        .alias("window")
    )
    grid = drift_grid(windowed)
    assert grid.windows == ["round-9", "round-10"]  # in time order, not by name


def test_the_effect_colour_scale_stops_at_the_95th_percentile():
    values = np.array([[0.0, 1.0], [2.0, np.nan]])
    assert effect_ceiling(values) == pytest.approx(1.9)
    assert effect_ceiling(np.zeros((2, 2))) > 0


def test_empty_or_incomplete_reports_are_refused_with_what_is_missing():
    with pytest.raises(ChartInputError, match="no per-feature drift check"):
        drift_heatmap(SMALL.head(0), Path("unused.png"))
    with pytest.raises(ChartInputError, match="no per-feature drift check"):
        drift_heatmap(SMALL.filter(pl.col("kind") == "multivariate"), Path("unused.png"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['psi'\]"):
        drift_heatmap(SMALL.drop("psi"), Path("unused.png"))


def test_the_heatmap_renders_a_png(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for week in range(30):
        day = date(2016, 1, 4) + timedelta(days=7 * week)
        for k in range(12):
            q = float(10 ** -rng.uniform(0, 12 * k / 11))
            psi = float(rng.gamma(1 + k / 4, 0.1))
            rows.append((day, f"feature_{k:02d}", q, psi, psi * 2, q < 0.05 and psi > 0.25))
    path = drift_heatmap(report(rows), tmp_path / "drift.png", Effect.WASSERSTEIN)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width == 990 and 300 < height < 1600, (width, height)
