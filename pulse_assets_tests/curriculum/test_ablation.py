"""The ablation (curriculum against uniform weights) by hand, and the curriculum's charts."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pulse_assets.curriculum import CurriculumError, ablation, round_curriculum
from pulse_assets.curriculum.charts import ablation_chart, curriculum_chart
from pulse_assets.evaluation.charts import ChartInputError
from pulse_assets.evaluation.significance import Loss
from pulse_assets_tests.curriculum.conftest import (
    constant_model,
    record,
    settings,
    training_config,
    two_months,
)

DAYS = [date(2016, 7, 1) + timedelta(days=k) for k in range(4)]


def arm(errors: list[float], rounds: list[str] | None = None) -> pl.DataFrame:
    rounds = rounds or ["A", "A", "B", "B"]
    return pl.DataFrame(
        {"date": DAYS[: len(errors)], "round": rounds[: len(errors)], "error": errors}
    )


def test_the_ablation_by_hand():
    result = ablation(arm([1.0, 1.0, 2.0, 0.0]), arm([2.0, 0.0, 2.0, 1.0]))
    # squared losses 1, 1, 4, 0 against 4, 0, 4, 1: differences -3, 1, 0, -1
    assert (result.days, result.curriculum_loss, result.uniform_loss) == (4, 1.5, 2.25)
    assert result.mean_difference == -0.75
    assert result.relative_difference == pytest.approx(-1 / 3)
    assert result.per_round.rows() == [("A", 2, 1.0, 2.0, -1.0), ("B", 2, 2.0, 2.5, -0.5)]
    variance = (2.25**2 + 1.75**2 + 0.75**2 + 0.25**2) / 4
    statistic = -0.75 / math.sqrt(variance / 4) * math.sqrt(3 / 4)  # HLN factor, h = 1
    assert result.test.statistic == pytest.approx(statistic)
    assert result.test.p_value == pytest.approx(2 * stats.t.sf(abs(statistic), 3))
    assert not result.significant
    assert result.verdict.endswith("no significant difference at the 0.05 level")
    assert "33.3% lower with the curriculum" in result.verdict
    assert "lower in 2 of 2 rounds" in result.verdict

    absolute = ablation(arm([1.0, -1.0, 2.0, 0.0]), arm([2.0, 0.0, -2.0, 1.0]), Loss.ABSOLUTE)
    assert absolute.mean_difference == pytest.approx((-1 + 1 + 0 - 1) / 4)


def noise_arms(scale: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(5)
    days = [date(2016, 1, 1) + timedelta(days=k) for k in range(120)]
    rounds = [d.strftime("%Y-%m") for d in days]
    uniform = rng.normal(0.0, 1.0, len(days))
    mine = uniform * scale + rng.normal(0.0, 0.05, len(days))
    frame = pl.DataFrame({"date": days, "round": rounds})
    return frame.with_columns(error=mine), frame.with_columns(error=uniform)


def test_the_verdict_says_whether_the_curriculum_helped_or_hurt():
    better, uniform = noise_arms(0.5)
    helped = ablation(better, uniform)
    assert helped.significant and helped.mean_difference < 0
    assert helped.verdict.endswith("the curriculum helped, significant at the 0.05 level")
    worse, uniform = noise_arms(1.5)
    hurt = ablation(worse, uniform)
    assert hurt.significant and hurt.verdict.endswith(
        "the curriculum hurt, significant at the 0.05 level"
    )
    assert "higher with the curriculum" in hurt.verdict


def test_arms_on_different_days_or_rounds_are_refused():
    with pytest.raises(
        CurriculumError, match=r"1 day\(s\) \(first 2016-07-04\) have an error in one arm only"
    ):
        ablation(arm([1.0, 1.0, 2.0, 0.0]), arm([1.0, 1.0, 2.0]))
    with pytest.raises(CurriculumError, match="different rounds"):
        ablation(arm([1.0, 1.0, 2.0, 0.0]), arm([1.0, 1.0, 2.0, 0.0], ["A", "B", "B", "B"]))
    twice = pl.concat([arm([1.0, 1.0, 2.0, 0.0]), arm([1.0])])
    with pytest.raises(CurriculumError, match="hold a day twice"):
        ablation(twice, arm([1.0, 1.0, 2.0, 0.0]))
    with pytest.raises(CurriculumError, match="uniform arm's loss is 0"):
        ablation(arm([1.0, 1.0, 2.0, 0.0]), arm([0.0, 0.0, 0.0, 0.0]))


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_charts_are_drawn_and_an_empty_curriculum_is_refused(tmp_path: Path):
    features, labels = two_months()
    load = {"a": constant_model(0.0)}.__getitem__
    cutoff = date(2020, 2, 10)

    def made(**overrides: object):
        return round_curriculum(
            [record(date(2020, 1, 1), "a")],
            features,
            labels,
            load,
            cutoff,
            training_config(),
            settings(**overrides),
        )

    weights = settings().score_weights
    assert is_png(curriculum_chart(made(), weights, tmp_path / "scored.png"))
    assert is_png(curriculum_chart(made(min_error_days=99), weights, tmp_path / "uniform.png"))
    with pytest.raises(ChartInputError, match="no scenario \\(curriculum.enabled is false\\)"):
        curriculum_chart(made(enabled=False), weights, tmp_path / "none.png")
    better, uniform = noise_arms(0.5)
    assert is_png(ablation_chart(ablation(better, uniform), tmp_path / "ablation.png"))


def test_one_rounds_verdict_does_not_count_rounds():
    one = ablation(arm([1.0, 2.0, 0.5], ["A"] * 3), arm([2.0, 1.5, 1.0], ["A"] * 3))
    assert "rounds" not in one.verdict and "over 3 out-of-sample days" in one.verdict
    two = ablation(arm([1.0, 1.0, 2.0, 0.0]), arm([2.0, 0.0, 2.0, 1.0]))
    assert "lower in 2 of 2 rounds" in two.verdict
