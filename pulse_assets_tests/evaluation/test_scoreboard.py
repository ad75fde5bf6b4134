"""The scoreboard's one sentence says who won on RMSE and on QLIKE, and how sure it is."""

import polars as pl

from pulse_assets.evaluation.scoreboard import best_baseline_comparison, winner_line


def skill(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"forecaster": n, "rmse": r, "mae": r, "qlike": q, "theil_u2": 1.0, "days": 100}
            for n, r, q in rows
        ]
    )


def dm(baseline: str, p_value: float, verdict: str) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "baseline": baseline,
                "loss": "squared",
                "dm_statistic": -1.0,
                "p_value": p_value,
                "days": 100,
                "verdict": verdict,
            }
        ]
    )


def test_a_champion_best_on_rmse_but_not_on_qlike_is_said_to_be_both():
    table = skill(
        [("champion", 0.0048, -8.87), ("garch", 0.0049, -8.97), ("naive", 0.0064, float("nan"))]
    )
    line = winner_line(table, dm("garch", 0.34, "no significant difference (p >= 0.05)"))
    assert line.startswith("the champion had the lowest out-of-sample RMSE (0.00480")
    assert "DM p = 0.34 against garch: no significant difference" in line
    assert line.endswith(
        "on QLIKE, though, garch was better (-8.9700 against the champion's -8.8700)"
    )


def test_a_baseline_that_wins_is_named_the_winner():
    table = skill(
        [("champion", 0.0052, -8.7), ("ewma", 0.0050, -8.9), ("challenger_shadow", 0.001, -9.9)]
    )
    line = winner_line(table, dm("ewma", 0.01, "baseline better"))
    assert line.startswith("the baseline ewma won (RMSE 0.00500 against the champion's 0.00520)")
    assert "did not beat the field's standard" in line
    compared = best_baseline_comparison(table, dm("ewma", 0.01, "baseline better"))
    assert compared.best_baseline == "ewma" and not compared.champion_wins
