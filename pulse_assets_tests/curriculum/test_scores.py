"""The curriculum's pieces against numbers computed by hand."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from pulse_assets.config import CurriculumRegime, CurriculumSettings
from pulse_assets.curriculum.analysis import analyze_errors
from pulse_assets.curriculum.scenarios import CurriculumError, describe_scenarios, scenario_of
from pulse_assets.curriculum.scoring import (
    edge_rows,
    min_max,
    novelty,
    outside_share,
    total_scores,
)
from pulse_assets.curriculum.weights import scenario_weights


def test_scenario_weights_are_linear_in_the_score_bounded_and_mean_one():
    weights = scenario_weights(np.array([0.0, 0.5, 1.0]), np.array([10.0, 10.0, 20.0]), 3.0)
    # raw weights 1, 2, 3; their mean over the 40 rows is (10 + 20 + 60) / 40 = 2.25
    assert weights == pytest.approx([1 / 2.25, 2 / 2.25, 3 / 2.25])
    assert weights.max() / weights.min() == pytest.approx(3.0)
    assert (weights * [10, 10, 20]).sum() / 40 == pytest.approx(1.0)
    with pytest.raises(CurriculumError, match="all 2 scenario scores equal 0.3"):
        scenario_weights(np.array([0.3, 0.3]), np.array([1.0, 1.0]), 3.0)


def test_novelty_is_the_mean_distance_to_the_nearest_scenarios_in_standard_units():
    descriptors = np.array([[0.0], [1.0], [3.0]])
    spread = np.sqrt(((0 - 4 / 3) ** 2 + (1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 3)
    assert novelty(descriptors, 1) == pytest.approx(np.array([1.0, 1.0, 2.0]) / spread)
    assert novelty(descriptors, 2) == pytest.approx(np.array([2.0, 1.5, 2.5]) / spread)
    constant_column = np.array([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0]])
    assert novelty(constant_column, 1) == pytest.approx(novelty(descriptors, 1))
    assert novelty(np.array([[2.0]]), 3).tolist() == [0.0]


def test_outside_share_and_edge_rows_by_hand():
    values = np.array([[0.0, 5.0], [2.0, 5.0], [9.0, -1.0]])
    share = outside_share(values, np.array([1.0, 0.0]), np.array([3.0, 6.0]))
    assert share.tolist() == [0.5, 0.0, 1.0]
    column = np.array([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0], [3.0], [3.0]])
    # q = 0.2: low 0.4 and high 2.6 (linear interpolation), so the 0s and 3s are edges
    assert edge_rows(column, 0.2).tolist() == [1, 1, 0, 0, 0, 0, 1, 1]


def test_min_max_and_total_scores_with_a_constant_score():
    assert min_max(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]  # type: ignore[union-attr]
    assert min_max(np.array([7.0, 7.0])) is None
    raw = pl.DataFrame(
        {
            "scenario": [date(2020, 1, 1), date(2020, 2, 1), date(2020, 3, 1)],
            "error_reduction_raw": [-0.5, 0.5, 0.0],
            "coverage_expansion_raw": [0.25, 0.25, 0.25],
            "edge_case_exposure_raw": [0.0, 0.1, 0.2],
            "novelty_raw": [3.0, 1.0, 2.0],
        }
    )
    weights = CurriculumSettings().score_weights  # 0.4, 0.3, 0.2, 0.1 normalized
    scored = total_scores(raw, weights)
    frame = scored.frame
    assert frame.get_column("error_reduction").to_list() == [0.0, 1.0, 0.5]
    assert frame.get_column("coverage_expansion").to_list() == [0.0, 0.0, 0.0]
    assert frame.get_column("edge_case_exposure").to_list() == pytest.approx([0.0, 0.5, 1.0])
    assert frame.get_column("novelty").to_list() == [1.0, 0.0, 0.5]
    assert frame.get_column("score").to_list() == pytest.approx(
        [0.1, 0.4 + 0.2 * 0.5, 0.4 * 0.5 + 0.2 + 0.1 * 0.5]
    )
    assert scored.notes == ("coverage_expansion is 0.25 for every scenario: it scores 0 for all",)


def test_error_bins_with_shrinkage_by_hand():
    days = [date(2020, 1, d) for d in (6, 7, 8, 9)]
    errors = pl.DataFrame({"date": days, "error": [1.0, -1.0, 2.0, -2.0]})
    rows = pl.DataFrame({"date": days, "x": [1.0, 2.0, 3.0, 4.0]}).with_columns(
        scenario_of("month")
    )
    analysis = analyze_errors(errors, rows, ["x"], quantiles=2, shrinkage_days=2)
    # squared errors 1, 1, 4, 4: mean 2.5; the median edge 2.5 splits them 2 | 2; each bin's
    # ratio is (its sum + 2 * 2.5) / (2 + 2) / 2.5
    assert analysis.mse == 2.5
    table = analysis.table
    assert table.get_column("high").to_list() == [2.5, None]
    assert table.get_column("mse").to_list() == [1.0, 4.0]
    assert table.get_column("ratio").to_list() == pytest.approx([0.7, 1.3])
    probe = pl.DataFrame({"x": [0.0, 2.5, 100.0]})
    assert analysis.row_excess(probe) == pytest.approx([-0.3, 0.3, 0.3])
    by_scenario = analysis.by_scenario()
    assert by_scenario.row(0) == (date(2020, 1, 1), 4, 2.5)

    tied = rows.with_columns(x=pl.lit(1.0))  # one edge (1.0); no error day below it
    flat = analyze_errors(errors, tied, ["x"], quantiles=2, shrinkage_days=0)
    assert flat.table.get_column("days").to_list() == [0, 4]
    assert flat.table.get_column("ratio").to_list() == [1.0, 1.0]  # an empty bin says nothing
    assert flat.row_excess(probe).tolist() == [0.0, 0.0, 0.0]


def test_an_error_without_a_feature_row_or_all_zero_is_refused():
    rows = pl.DataFrame({"date": [date(2020, 1, 6)], "x": [1.0]}).with_columns(scenario_of("month"))
    elsewhere = pl.DataFrame({"date": [date(2021, 1, 6)], "error": [1.0]})
    with pytest.raises(CurriculumError, match="no champion error day has a feature row"):
        analyze_errors(elsewhere, rows, ["x"], 2, 0)
    zero = pl.DataFrame({"date": [date(2020, 1, 6)], "error": [0.0]})
    with pytest.raises(CurriculumError, match="mean squared error 0.0"):
        analyze_errors(zero, rows, ["x"], 2, 0)


def test_regime_descriptors_by_hand():
    days = [date(2020, 1, 6), date(2020, 1, 7), date(2020, 1, 8), date(2020, 2, 3)]
    rows = pl.DataFrame({"date": days, "v": [1.0, -3.0, 2.0, 5.0]}).with_columns(
        scenario_of("month")
    )
    regimes = {
        stat: CurriculumRegime(column="v", stat=stat)  # type: ignore[arg-type]
        for stat in ("mean", "mean_abs", "min", "max", "std", "change")
    }
    frame = describe_scenarios(rows, regimes)
    january = frame.row(0, named=True)
    assert (january["first"], january["last"], january["rows"]) == (days[0], days[2], 3)
    assert january["mean"] == 0.0 and january["mean_abs"] == 2.0
    assert (january["min"], january["max"], january["change"]) == (-3.0, 2.0, 1.0)
    assert january["std"] == pytest.approx(math.sqrt(14 / 3))
    february = frame.row(1, named=True)
    assert (february["std"], february["change"], february["rows"]) == (0.0, 0.0, 1)
    with pytest.raises(CurriculumError, match=r"lacks column\(s\) \['w'\]"):
        describe_scenarios(rows, {"other": CurriculumRegime(column="w")})


def test_scenario_periods():
    days = pl.DataFrame({"date": [date(2020, 2, 13), date(2020, 5, 31)]})

    def keys(period: str) -> list[date]:
        return days.select(scenario_of(period)).to_series().to_list()

    assert keys("month") == [date(2020, 2, 1), date(2020, 5, 1)]
    assert keys("quarter") == [date(2020, 1, 1), date(2020, 4, 1)]
    assert keys("week") == [date(2020, 2, 10), date(2020, 5, 25)]  # Mondays


def test_score_weights_are_normalized_at_load_and_checked():
    settings = CurriculumSettings(score_weights={"novelty": 3.0, "error_reduction": 1.0})
    assert settings.score_weights == {"novelty": 0.75, "error_reduction": 0.25}
    assert sum(CurriculumSettings().score_weights.values()) == pytest.approx(1.0)
    with pytest.raises(ValidationError, match="unknown score"):
        CurriculumSettings(score_weights={"speed": 1.0})
    with pytest.raises(ValidationError, match="positive sum"):
        CurriculumSettings(score_weights={"novelty": 0.0})
    with pytest.raises(ValidationError, match="regime name 'score'"):
        CurriculumSettings(regimes={"score": CurriculumRegime(column="x")})
    with pytest.raises(ValidationError, match="max_weight_ratio"):
        CurriculumSettings(max_weight_ratio=1.0)
