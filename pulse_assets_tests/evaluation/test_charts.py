"""The walk-forward charts: the numbers they draw, checked by hand, and each renders a PNG."""

import math
from datetime import date, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from pulse_assets.evaluation.charts import (
    ChartInputError,
    champion_changes,
    cumulative_dm,
    cumulative_dm_chart,
    forecast_chart,
    loss_per_round_chart,
    per_round_rmse,
    relative_loss,
    relative_loss_chart,
    rolling_rmse,
)

LABEL = "sp500_abs_return_next"
BASELINES = ["naive", "trailing_mean", "ewma", "garch"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, width: int = 990) -> None:
    """A real PNG of the documented width (11 in at 90 dpi) and a plausible height."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    height, got_width = matplotlib.image.imread(path).shape[:2]
    assert got_width == width, f"{path}: {got_width} px wide, expected {width}"
    assert 300 <= height <= 1600, f"{path}: {height} px high"


def frame(rows: list[dict]) -> pl.DataFrame:
    """A retrodiction frame from rows of ``round, actual, champion, <baselines>, shadow``."""
    start = date(2020, 1, 1)
    return pl.DataFrame(
        [
            {
                "date": start + timedelta(days=k),
                "round": row["round"],
                "model_version": row.get("version", "1"),
                f"actual_{LABEL}": row["actual"],
                f"forecast_{LABEL}": row["champion"],
                f"shadow_{LABEL}": row.get("shadow"),
                **{f"{b}_{LABEL}": row.get(b, row["actual"]) for b in BASELINES},
            }
            for k, row in enumerate(rows)
        ],
        schema_overrides={f"shadow_{LABEL}": pl.Float64},
    )


def realistic(days: int = 120, rounds: int = 5, seed: int = 4) -> pl.DataFrame:
    """Absolute returns with volatility clustering, a champion and baselines that track them."""
    rng = np.random.default_rng(seed)
    sigma = 0.008 * np.exp(np.cumsum(rng.normal(0, 0.08, days)))
    actual = np.abs(rng.normal(0, sigma))
    dates = [date(2021, 1, 4) + timedelta(days=k) for k in range(days)]
    per = -(-days // rounds)
    rnd = [dates[(k // per) * per].isoformat() for k in range(days)]
    naive = np.concatenate([[actual[0]], actual[:-1]])
    smooth = pl.Series(naive).ewm_mean(alpha=0.06).to_numpy()
    version = [str(1 + (k // per + 1) // 2) for k in range(days)]
    return pl.DataFrame(
        {
            "date": dates,
            "round": rnd,
            "model_version": version,
            "in_sample": [False] * days,
            f"actual_{LABEL}": actual,
            f"forecast_{LABEL}": sigma * 0.8 + rng.normal(0, 0.0005, days),
            f"shadow_{LABEL}": [None if k < per else float(sigma[k] * 0.75) for k in range(days)],
            f"naive_{LABEL}": naive,
            f"trailing_mean_{LABEL}": pl.Series(naive).rolling_mean(20, min_samples=1).to_numpy(),
            f"ewma_{LABEL}": smooth,
            f"garch_{LABEL}": smooth * 1.05,
        }
    )


# a champion with errors +1, -1 in round A and +2, 0 in round B; the naive forecast is off by
# 2 on one day of each round; a day with no GARCH forecast is scored for nobody
TINY = frame(
    [
        {"round": "A", "actual": 1.0, "champion": 2.0, "naive": 3.0},
        {"round": "A", "actual": 1.0, "champion": 0.0, "naive": 1.0, "shadow": 1.5},
        {"round": "A", "actual": 5.0, "champion": 5.0, "garch": None},
        {"round": "B", "actual": 2.0, "champion": 4.0, "naive": 2.0, "shadow": 2.0, "version": "2"},
        {"round": "B", "actual": 2.0, "champion": 2.0, "naive": 0.0, "shadow": 3.0, "version": "2"},
    ]
)


def test_per_round_rmse_scores_every_forecaster_on_the_rounds_common_days():
    table = per_round_rmse(TINY, LABEL)
    got = {(r["round"], r["forecaster"]): (r["rmse"], r["days"]) for r in table.to_dicts()}
    assert got[("A", "champion")] == (pytest.approx(1.0), 2)  # the GARCH-less day is left out
    assert got[("A", "naive")] == (pytest.approx(math.sqrt(2.0)), 2)
    assert got[("A", "garch")] == (pytest.approx(0.0), 2)
    assert got[("B", "champion")] == (pytest.approx(math.sqrt(2.0)), 2)
    assert got[("B", "naive")] == (pytest.approx(math.sqrt(2.0)), 2)
    # the shadow on the common days it forecast: |0.5| in A, errors 0 and 1 in B
    assert got[("A", "challenger_shadow")] == (pytest.approx(0.5), 1)
    assert got[("B", "challenger_shadow")] == (pytest.approx(math.sqrt(0.5)), 2)
    assert table["start"].to_list() == sorted(table["start"].to_list())


def test_relative_loss_divides_by_the_span_best_and_by_each_rounds_best_baseline():
    rows = [
        {"round": "A", "actual": 1.0, "champion": 2.0, "naive": 3.0, "trailing_mean": 2.0},
        {"round": "A", "actual": 1.0, "champion": 1.0, "naive": 1.0, "trailing_mean": 1.0},
        {"round": "B", "actual": 1.0, "champion": 1.0, "naive": 1.0, "trailing_mean": 1.0},
        {"round": "B", "actual": 1.0, "champion": 3.0, "naive": 2.0, "trailing_mean": 4.0},
    ]
    table = frame([r | {"ewma": r["actual"] + 5.0, "garch": r["actual"] + 5.0} for r in rows]).pipe(
        relative_loss, LABEL
    )
    # pooled squared errors: naive (4 + 1) / 4, trailing_mean (1 + 9) / 4: naive is best
    assert table["span_best"].to_list() == ["naive", "naive"]
    a, b = table.row(0, named=True), table.row(1, named=True)
    assert a["champion_rmse"] == pytest.approx(math.sqrt(0.5))
    assert a["ratio_span_best"] == pytest.approx(math.sqrt(0.5) / math.sqrt(2.0))
    assert a["round_best"] == "trailing_mean"
    assert a["ratio_round_best"] == pytest.approx(1.0)
    assert b["ratio_span_best"] == pytest.approx(math.sqrt(2.0) / math.sqrt(0.5))
    assert b["round_best"] == "naive"
    assert b["ratio_round_best"] == pytest.approx(2.0)


def test_cumulative_dm_tests_every_day_up_to_each_round():
    # champion errors 1, sqrt2, sqrt3, then 0; every baseline is exact: d = 1, 2, 3, (0)
    rows = [
        {"round": "A", "actual": 0.0, "champion": 1.0},
        {"round": "A", "actual": 0.0, "champion": math.sqrt(2.0)},
        {"round": "B", "actual": 0.0, "champion": math.sqrt(3.0)},
        {"round": "C", "actual": 0.0, "champion": 0.0},
    ]
    table = cumulative_dm(frame(rows), LABEL)
    assert table.filter(pl.col("round") == "A").height == 0  # 2 days: too few for the test
    b = table.filter(pl.col("round") == "B")
    assert sorted(b["baseline"]) == sorted(BASELINES)
    # d = 1, 2, 3: mean 2, gamma_0 = 2/3, 2 / sqrt(2/9) * sqrt((3 - 1) / 3) = 2 sqrt 3
    assert b["dm_statistic"].to_list() == pytest.approx([2.0 * math.sqrt(3.0)] * 4)
    assert b["days"].to_list() == [3] * 4
    c = table.filter(pl.col("round") == "C")
    # d = 1, 2, 3, 0: mean 1.5, gamma_0 = 1.25, 1.5 / sqrt(1.25 / 4) * sqrt(3 / 4) = 2.3238
    assert c["dm_statistic"][0] == pytest.approx(2.32379, abs=1e-5)
    assert c["p_value"][0] == pytest.approx(0.10273, abs=1e-5)  # two-sided, Student t(3)


def test_rolling_rmse_and_champion_changes():
    rolled = rolling_rmse(TINY, LABEL, days=2)
    # common days: A1, A2, B1, B2; champion errors 1, -1, 2, 0
    assert rolled["champion"].to_list() == pytest.approx([1.0, 1.0, math.sqrt(2.5), math.sqrt(2.0)])
    assert "challenger_shadow" not in rolled.columns
    changes = champion_changes(TINY)
    assert changes["model_version"].to_list() == ["2"]
    assert changes["date"].to_list() == [date(2020, 1, 4)]


def test_missing_columns_and_unknown_actuals_are_named():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['garch_sp500_abs_return_next'\]"):
        per_round_rmse(TINY.drop(f"garch_{LABEL}"), LABEL)
    with pytest.raises(ChartInputError, match=r"lacks column\(s\) \['round'\]"):
        relative_loss(TINY.drop("round"), LABEL)
    unknown = TINY.with_columns(pl.lit(None, pl.Float64).alias(f"actual_{LABEL}"))
    with pytest.raises(ChartInputError, match="no retrodicted day has the actual"):
        forecast_chart(unknown, LABEL, Path("unused.png"))
    with pytest.raises(ChartInputError, match="needs at least 3"):
        cumulative_dm(TINY.head(2), LABEL)


def test_every_chart_renders_a_png(tmp_path):
    data = realistic()
    charts = {
        "forecast": forecast_chart,
        "relative": relative_loss_chart,
        "loss": loss_per_round_chart,
        "dm": cumulative_dm_chart,
    }
    for name, draw in charts.items():
        path = draw(data, LABEL, tmp_path / "out" / f"{name}.png")
        assert path == tmp_path / "out" / f"{name}.png"
        assert_png(path)
