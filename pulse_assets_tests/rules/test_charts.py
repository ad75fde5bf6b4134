"""The rule-impact chart: gains and per-round RMSE change by hand, activations, and PNGs."""

from datetime import date, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from pulse_assets.evaluation.charts import ChartInputError
from pulse_assets.rules.charts import (
    activations,
    impact_headline,
    round_rmse_change,
    rule_gain,
    rule_impact_chart,
)

LABEL = "sp500_abs_return_next"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def impact(rows: list[tuple[str, str, int, float, float, float | None]]) -> pl.DataFrame:
    """The rule-impact frame from (round, active_rule_ids, rules_fired, forecast, adjusted,
    actual), one day per row."""
    return pl.DataFrame(
        [
            {
                "date": date(2020, 1, 1) + timedelta(days=k),
                "round": rnd,
                "active_rule_ids": ids,
                "rules_fired": fired,
                f"forecast_{LABEL}": forecast,
                f"adjusted_{LABEL}": adjusted,
                f"actual_{LABEL}": actual,
            }
            for k, (rnd, ids, fired, forecast, adjusted, actual) in enumerate(rows)
        ],
        schema_overrides={f"actual_{LABEL}": pl.Float64},
    )


SMALL = impact(
    [
        ("A", "", 0, 1.0, 1.0, 3.0),  # before any rule: not counted
        ("A", "R1", 1, 1.0, 2.0, 3.0),  # error 2 -> 1: gain 4 - 1 = 3
        ("B", "R1", 0, 2.0, 2.0, 2.0),  # not fired: gain 0
        ("B", "R1,R2", 2, 4.0, 1.0, 2.0),  # error 2 -> -1: gain 3
        ("B", "R2", 1, 2.0, 3.0, 2.0),  # error 0 -> 1: gain -1
        ("C", "R2", 1, 2.0, 3.0, None),  # actual unknown: not counted
    ]
)


def test_gain_is_the_squared_error_the_rules_removed_from_the_first_activation():
    gains = rule_gain(SMALL, LABEL)
    assert gains["date"][0] == date(2020, 1, 2)
    assert gains["gain"].to_list() == pytest.approx([3.0, 0.0, 3.0, -1.0])
    assert gains["cumulative_gain"].to_list() == pytest.approx([3.0, 3.0, 6.0, 5.0])
    assert impact_headline(gains).endswith(
        "rules fired 4 time(s) on 4 days; in all they helped (+5)"
    )


def test_rmse_change_per_round_is_before_minus_after_rules():
    table = round_rmse_change(SMALL, LABEL)
    assert table["round"].to_list() == ["A", "B"]
    a, b = table.row(0, named=True), table.row(1, named=True)
    assert (a["rmse_forecast"], a["rmse_adjusted"], a["days"]) == (2.0, 1.0, 1)
    assert a["rmse_reduction"] == pytest.approx(1.0)
    # B: errors before 0, 2, 0 (RMSE sqrt(4/3)); after 0, -1, 1 (RMSE sqrt(2/3))
    assert b["rmse_reduction"] == pytest.approx(np.sqrt(4 / 3) - np.sqrt(2 / 3))
    assert (b["fired"], b["days"]) == (3, 3)


def test_activations_are_the_days_the_active_set_changed():
    changes = activations(SMALL)
    assert changes.rows() == [
        (date(2020, 1, 2), "R1", ""),
        (date(2020, 1, 4), "R2", ""),
        (date(2020, 1, 5), "", "R1"),
    ]


def test_bad_input_is_refused_by_name():
    with pytest.raises(ChartInputError, match=r"lacks column\(s\) \['rules_fired'\]"):
        rule_impact_chart(SMALL.drop("rules_fired"), LABEL, Path("unused.png"))
    unknown = SMALL.with_columns(pl.lit(None, pl.Float64).alias(f"actual_{LABEL}"))
    with pytest.raises(ValueError, match="no day with the actual, forecast and adjusted"):
        rule_impact_chart(unknown, LABEL, Path("unused.png"))


def realistic(days: int = 120, fire: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    actual = np.abs(rng.normal(0, 0.01, days))
    forecast = np.full(days, 0.008)
    fired = (rng.uniform(size=days) < 0.2) & (np.arange(days) >= 30) & fire
    adjusted = np.where(fired, forecast * 1.2, forecast)
    ids = ["" if k < 30 else "R1" if k < 70 else "R1,R2" for k in range(days)]
    return impact(
        [
            (f"round-{k // 21:02d}", ids[k], int(fired[k]), forecast[k], adjusted[k], actual[k])
            for k in range(days)
        ]
    )


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def test_the_chart_renders_with_and_without_any_rule_firing(tmp_path):
    assert png_size(rule_impact_chart(realistic(), LABEL, tmp_path / "fired.png")) == (990, 675)
    silent = realistic(fire=False)
    assert rule_gain(silent, LABEL)["cumulative_gain"].to_list() == [0.0] * 90
    assert "\nno rule fired" in impact_headline(rule_gain(silent, LABEL))
    never = silent.with_columns(pl.lit("").alias("active_rule_ids"))
    assert rule_gain(never, LABEL).height == 120  # no activation: the whole span
    assert "whole span (no rule active)" in impact_headline(rule_gain(never, LABEL))
    assert png_size(rule_impact_chart(never, LABEL, tmp_path / "never.png")) == (990, 675)
