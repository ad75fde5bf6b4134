"""A round's curriculum end to end on hand-made worlds: champion errors, scores and weights by
hand, every degenerate case with its reason, and nothing at or after the cutoff read."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from pulse_assets.curriculum import CurriculumError, champion_errors, round_curriculum
from pulse_assets.curriculum.weights import Curriculum
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.rounds import RoundRecord
from pulse_assets_tests.curriculum.conftest import (
    constant_model,
    record,
    settings,
    training_config,
    two_months,
)

CUTOFF = date(2020, 2, 10)
JANUARY, FEBRUARY = date(2020, 1, 1), date(2020, 2, 1)
MODELS = {"a": constant_model(0.0), "b": constant_model(10.0), "c": constant_model(50.0)}


def load(version: str) -> ForecastModule:
    return MODELS[version]


def curriculum(
    records: list[RoundRecord] | None = None,
    features: pl.DataFrame | None = None,
    labels: pl.DataFrame | None = None,
    window_days: int = 120,
    **overrides: object,
) -> Curriculum:
    hand_features, hand_labels = two_months()
    return round_curriculum(
        [record(JANUARY, "a")] if records is None else records,
        hand_features if features is None else features,
        hand_labels if labels is None else labels,
        load,
        CUTOFF,
        training_config(window_days),
        settings(**overrides),
    )


def test_champion_errors_come_from_the_champion_of_each_day_and_known_labels_only():
    features, labels = two_months()
    records = [record(JANUARY, "a"), record(FEBRUARY, "b"), record(CUTOFF, "c")]
    errors = champion_errors(records, features, labels, "y", load, CUTOFF)
    assert errors.get_column("version").to_list() == ["a"] * 4 + ["b"] * 4
    # January: 0 - 1; February: 10 - 2; Feb 7 is left out (its label resolves on the cutoff)
    assert errors.get_column("error").to_list() == [-1.0] * 4 + [8.0] * 4
    assert errors.get_column("date").max() == date(2020, 2, 6)

    kept = champion_errors(
        [record(JANUARY, "a"), record(FEBRUARY, "a")], features, labels, "y", load, CUTOFF
    )
    assert kept.get_column("error").to_list() == [-1.0] * 4 + [-2.0] * 4
    assert champion_errors([], features, labels, "y", load, CUTOFF).height == 0
    twice = [record(JANUARY, "a"), record(JANUARY, "b")]
    with pytest.raises(
        CurriculumError, match=r"rounds starting on \[datetime.date\(2020, 1, 1\)\]"
    ):
        champion_errors(twice, features, labels, "y", load, CUTOFF)


def test_the_curriculum_of_two_months_by_hand():
    made = curriculum()
    assert made.reason is None and made.error_days == 8 and made.champions == ("a",)
    frame = made.scenarios
    assert frame.get_column("scenario").to_list() == [JANUARY, FEBRUARY]
    assert frame.get_column("volatility").to_list() == [0.5, 2.5]
    # squared errors 1 (January, vol 0..1) and 4 (February, vol 2..3): mean 2.5, bin ratios
    # 0.4 and 1.6, so January's rows have excess -0.6 and February's +0.6
    assert frame.get_column("error_reduction_raw").to_list() == pytest.approx([-0.6, 0.6])
    assert frame.get_column("error_reduction").to_list() == [0.0, 1.0]
    # every value inside the range the errors covered; half of each month's
    # rows are edges; each scenario is the other's only neighbour: no score tells them apart
    assert frame.get_column("coverage_expansion_raw").to_list() == [0.0, 0.0]
    assert frame.get_column("edge_case_exposure_raw").to_list() == [0.5, 0.5]
    assert frame.get_column("novelty_raw").to_list() == pytest.approx([2.0, 2.0])
    assert len(made.notes) == 3
    assert frame.get_column("score").to_list() == pytest.approx([0.0, 0.4])
    # raw weights 1 and 3 (max_weight_ratio), four rows each: mean 2
    assert frame.get_column("weight").to_list() == pytest.approx([0.5, 1.5])
    summary = made.summary()
    assert (summary["min_weight"], summary["max_weight"]) == pytest.approx((0.5, 1.5))
    assert summary["reason"] == "scored" and summary["error_days"] == 8

    features, _ = two_months()
    rows = features.filter(pl.col("date") < date(2020, 2, 7))
    assert made.row_weights(rows) == pytest.approx([0.5] * 4 + [1.5] * 4)
    february = rows.filter(pl.col("date") >= FEBRUARY)
    assert made.row_weights(february).tolist() == [1.0] * 4  # mean 1 over the rows given
    with pytest.raises(CurriculumError, match="lie in no scenario"):
        made.row_weights(pl.DataFrame({"date": [date(2020, 3, 2)]}))


def test_the_weight_ratio_is_the_configured_bound():
    made = curriculum(max_weight_ratio=5.0)
    weights = made.scenarios.get_column("weight").to_numpy()
    assert weights.max() / weights.min() == pytest.approx(5.0)
    assert (weights * made.scenarios.get_column("rows").to_numpy()).sum() / 8 == pytest.approx(1.0)


def assert_uniform(made: Curriculum, reason: str) -> None:
    assert made.uniform and made.reason is not None and reason in made.reason, made.reason
    assert made.scenarios.get_column("weight").to_list() == [1.0] * made.scenarios.height
    features, _ = two_months()
    assert made.row_weights(features.head(8)).tolist() == [1.0] * 8
    assert made.to_frame().columns == curriculum().to_frame().columns


def test_degenerate_curricula_are_uniform_and_say_why():
    assert_uniform(curriculum(enabled=False), "curriculum.enabled is false")
    assert_uniform(curriculum(window_days=30), "holds 1 scenario(s)")
    assert_uniform(curriculum(records=[]), "0 out-of-sample error day(s)")
    assert_uniform(
        curriculum(min_error_days=9),
        "8 out-of-sample error day(s) of a champion known before 2020-02-10 (1 earlier round "
        "record(s) read), fewer than curriculum.min_error_days (9)",
    )
    features, labels = two_months()
    perfect = labels.with_columns(label_y=pl.lit(0.0))
    assert_uniform(curriculum(labels=perfect), "error days before 2020-02-10 are all exactly 0")
    flat = features.with_columns(vol=pl.lit(1.0))
    same = curriculum(features=flat)
    assert_uniform(same, "all 2 scenarios score 0: nothing to weigh")
    assert same.scenarios.get_column("error_reduction_raw").to_list() == [0.0, 0.0]
    assert len(same.notes) == 4


def test_a_missing_regime_column_is_an_error_naming_it():
    with pytest.raises(
        CurriculumError, match=r"daily_features lacks column\(s\) \['drawdown_col'\]"
    ):
        curriculum(regimes={"drawdown": {"column": "drawdown_col", "stat": "min"}})


def tamper(frame: pl.DataFrame, when: pl.Expr) -> pl.DataFrame:
    numeric = [c for c in frame.columns if c != "date"]
    return frame.with_columns(
        pl.when(when).then(999.0).otherwise(pl.col(c)).alias(c) for c in numeric
    )


def test_nothing_at_or_after_the_cutoff_reaches_the_curriculum():
    features, labels = two_months()
    later = [
        CUTOFF + timedelta(days=d)
        for d in range(0, 8)
        if (CUTOFF + timedelta(days=d)).weekday() < 5
    ]
    features = pl.concat([features, pl.DataFrame({"date": later, "vol": [0.5] * len(later)})])
    labels = pl.concat([labels, pl.DataFrame({"date": later, "label_y": [3.0] * len(later)})])
    honest = curriculum(features=features, labels=labels)
    assert honest.reason is None

    future = pl.col("date") >= CUTOFF
    resolves_on_cutoff = pl.col("date") == date(2020, 2, 7)
    cheat = curriculum(
        records=[record(JANUARY, "a"), record(CUTOFF, "c")],
        features=tamper(features, future),
        labels=tamper(labels, future | resolves_on_cutoff),
    )
    assert cheat.scenarios.equals(honest.scenarios) and cheat.bins.equals(honest.bins)
    probe = features.filter(pl.col("date") < date(2020, 2, 7))
    assert np.array_equal(cheat.row_weights(probe), honest.row_weights(probe))

    known = curriculum(features=features, labels=tamper(labels, pl.col("date") == date(2020, 2, 6)))
    assert not known.scenarios.equals(honest.scenarios), "a label known before the cutoff counts"
