"""The curriculum's effect from retrodiction rows: each challenger against its uniform twin."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from pulse_assets.metrics.curriculum_effect import curriculum_effect

LABEL = "y"


def frame(rows: list[tuple[str, float, float | None, float | None, float]]) -> pl.DataFrame:
    """Retrodiction rows (round, champion forecast, shadow, twin, actual), one day each."""
    first = date(2016, 1, 4)
    return pl.DataFrame(
        {
            "date": [first + timedelta(days=i) for i in range(len(rows))],
            "round": [r[0] for r in rows],
            f"forecast_{LABEL}": [r[1] for r in rows],
            f"shadow_{LABEL}": [r[2] for r in rows],
            f"uniform_twin_{LABEL}": [r[3] for r in rows],
            f"actual_{LABEL}": [r[4] for r in rows],
        },
        schema_overrides={f"shadow_{LABEL}": pl.Float64, f"uniform_twin_{LABEL}": pl.Float64},
    )


def random_rounds(seed: int, better: float) -> pl.DataFrame:
    """Two rounds of 40 days; the challenger's error is ``better`` times its twin's plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(80):
        actual = float(rng.uniform(0.0, 0.02))
        twin_error = float(rng.normal(0.0, 0.005))
        error = better * twin_error + float(rng.normal(0.0, 0.0005))
        rows.append(("A" if index < 40 else "B", 0.01, actual + error, actual + twin_error, actual))
    return frame(rows)


def test_the_difference_is_the_challengers_loss_minus_its_twins_computed_by_hand():
    rows = random_rounds(3, better=0.8)
    effect = curriculum_effect(rows, LABEL)
    actual = rows[f"actual_{LABEL}"].to_numpy()
    mine = (rows[f"shadow_{LABEL}"].to_numpy() - actual) ** 2
    theirs = (rows[f"uniform_twin_{LABEL}"].to_numpy() - actual) ** 2
    assert effect.result is not None and effect.days == effect.weighted_days == 80
    assert effect.result.mean_difference == pytest.approx(np.mean(mine - theirs))
    assert effect.result.relative_difference == pytest.approx(
        np.mean(mine - theirs) / theirs.mean()
    )
    assert effect.result.mean_difference < 0 and effect.result.significant
    assert "the curriculum helped" in effect.outcome
    per_round = effect.result.per_round
    assert per_round["round"].to_list() == ["A", "B"]
    assert per_round["difference"].to_list() == pytest.approx(
        [np.mean((mine - theirs)[:40]), np.mean((mine - theirs)[40:])]
    )


def test_a_worse_challenger_is_reported_as_harm():
    effect = curriculum_effect(random_rounds(5, better=1.3), LABEL)
    assert effect.result is not None and effect.result.mean_difference > 0
    assert "the curriculum hurt" in effect.outcome


def test_where_the_challenger_is_the_champion_its_forecast_is_the_champions():
    rows = frame([("A", 0.011, None, 0.013, 0.01), ("A", 0.02, 0.018, 0.02, 0.01)] * 5)
    effect = curriculum_effect(rows, LABEL)
    assert effect.result is not None and effect.days == 10 and effect.weighted_days == 10
    expected = np.mean([0.001**2 - 0.003**2, 0.008**2 - 0.01**2])
    assert effect.result.mean_difference == pytest.approx(expected)


def test_uniform_weighted_challengers_have_no_effect_and_say_why():
    rows = frame([("A", 0.01, 0.012, 0.012, 0.011)] * 6 + [("A", 0.01, None, 0.01, 0.011)] * 3)
    effect = curriculum_effect(rows, LABEL)
    assert effect.result is None and (effect.days, effect.weighted_days) == (9, 0)
    assert "uniform weights" in effect.note and "no curriculum effect" in effect.outcome


def test_days_without_a_twin_or_an_actual_are_left_out_and_none_left_is_said():
    rows = frame([("A", 0.01, 0.012, None, 0.011), ("A", 0.01, 0.012, 0.013, None)])
    effect = curriculum_effect(rows, LABEL)
    assert effect.result is None and effect.days == 0
    assert "uniform_twin: false" in effect.note


def test_a_retrodiction_without_the_twin_column_asks_for_a_rerun():
    rows = frame([("A", 0.01, 0.012, 0.013, 0.011)]).drop(f"uniform_twin_{LABEL}")
    effect = curriculum_effect(rows, LABEL)
    assert effect.result is None and "re-materialize" in effect.note
