"""Who forecast best out of sample: every forecaster's skill and the champion's significance.

The forecasters are the champion of each day, the challenger's shadow forecasts, and the
field's standard baselines. Skill is compared on the days where every compared forecast and
the actual are known, so no forecaster is scored on easier days than another. The champion is
tested against each baseline with a two-sided Diebold-Mariano test on squared and absolute
loss: a negative statistic means the champion's loss was lower.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pulse_assets.evaluation.baselines import Baseline
from pulse_assets.evaluation.significance import Loss, diebold_mariano
from pulse_assets.metrics.forecast_skill import forecast_skill

CHAMPION, SHADOW = "champion", "challenger_shadow"
SIGNIFICANCE = 0.05


SCOREBOARD_DESCRIPTIONS = {
    "forecaster": "champion (of the day), shadow (the round's challenger) or a baseline",
    "rmse": "root mean squared error, out of sample",
    "mae": "mean absolute error, out of sample",
    "qlike": "QLIKE loss of the implied variance (lower is better)",
    "theil_u2": "RMSE / naive persistence's RMSE (below 1: beats naive)",
    "days": "days scored",
    "champion_dm_statistic": "DM statistic of the champion vs this forecaster, squared loss",
    "champion_dm_p_value": "its two-sided p-value (HAC variance, HLN correction)",
}


def forecaster_columns(label: str) -> dict[str, str]:
    """Forecaster name -> its column in a retrodiction frame."""
    columns = {CHAMPION: f"forecast_{label}", SHADOW: f"shadow_{label}"}
    return columns | {b.value: f"{b.value}_{label}" for b in Baseline}


def skill_table(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """RMSE, MAE, QLIKE and Theil's U2 per forecaster over the days all baselines and the
    champion are known; the shadow challenger over the subset of those it forecast."""
    columns = forecaster_columns(label)
    actual, naive = f"actual_{label}", columns[Baseline.NAIVE.value]
    common = frame.drop_nulls([actual, *(c for n, c in columns.items() if n != SHADOW)])
    rows = []
    for name, column in columns.items():
        scored = common.drop_nulls(column)
        if scored.height == 0:
            continue
        skill = forecast_skill(scored[actual], scored[column], scored[naive])
        rows.append({"forecaster": name, **skill, "days": scored.height})
    schema = {"forecaster": pl.String, "rmse": pl.Float64, "mae": pl.Float64}
    schema |= {"qlike": pl.Float64, "theil_u2": pl.Float64, "days": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def dm_table(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """The champion of the day against each baseline: DM statistic and p-value per loss."""
    columns = forecaster_columns(label)
    actual, champion = f"actual_{label}", columns[CHAMPION]
    rows = []
    for baseline in Baseline:
        paired = frame.drop_nulls([actual, champion, columns[baseline.value]])
        if paired.height < 3:
            continue
        for loss in Loss:
            test = diebold_mariano(
                paired[champion] - paired[actual],
                paired[columns[baseline.value]] - paired[actual],
                loss,
            )
            rows.append(
                {
                    "baseline": baseline.value,
                    "loss": loss.value,
                    "dm_statistic": test.statistic,
                    "p_value": test.p_value,
                    "days": test.n,
                    "verdict": _verdict(test.statistic, test.p_value),
                }
            )
    schema = {"baseline": pl.String, "loss": pl.String, "dm_statistic": pl.Float64}
    schema |= {"p_value": pl.Float64, "days": pl.Int64, "verdict": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _verdict(statistic: float, p_value: float) -> str:
    if p_value >= SIGNIFICANCE:
        return f"no significant difference (p >= {SIGNIFICANCE:g})"
    return "champion better" if statistic < 0 else "baseline better"


def winner_line(skill: pl.DataFrame, dm: pl.DataFrame) -> str:
    """One honest sentence: who had the lowest RMSE, whether the champion's difference from the
    best baseline is significant on squared loss, and who had the lowest QLIKE (the loss the
    volatility field ranks forecasts by), when that is someone else."""
    if skill.height == 0:
        return "no out-of-sample day with every forecast known: nothing to compare yet"
    return f"{_rmse_sentence(skill, dm)}{_qlike_clause(skill)}"


def _rmse_sentence(skill: pl.DataFrame, dm: pl.DataFrame) -> str:
    ranked = skill.filter(pl.col("forecaster") != SHADOW).sort("rmse")
    best = ranked.row(0, named=True)
    rival = ranked.filter(pl.col("forecaster") != CHAMPION).row(0, named=True)
    test = dm.filter((pl.col("baseline") == rival["forecaster"]) & (pl.col("loss") == "squared"))
    significance = (
        f"DM p = {test['p_value'][0]:.3g} against {rival['forecaster']}: {test['verdict'][0]}"
        if test.height
        else "no test"
    )
    if best["forecaster"] == CHAMPION:
        return (
            f"the champion had the lowest out-of-sample RMSE ({best['rmse']:.5f}, best baseline "
            f"{rival['forecaster']} {rival['rmse']:.5f}); {significance}"
        )
    champion = ranked.filter(pl.col("forecaster") == CHAMPION)
    mine = f"{champion['rmse'][0]:.5f}" if champion.height else "n/a"
    return (
        f"the baseline {best['forecaster']} won (RMSE {best['rmse']:.5f} against the champion's "
        f"{mine}): the learned model did not beat the field's standard; {significance}"
    )


def _qlike_clause(skill: pl.DataFrame) -> str:
    scored = skill.filter((pl.col("forecaster") != SHADOW) & pl.col("qlike").is_not_nan())
    champion = scored.filter(pl.col("forecaster") == CHAMPION)
    if scored.height == 0 or champion.height == 0:
        return ""
    best = scored.sort("qlike").row(0, named=True)
    if best["forecaster"] == CHAMPION:
        return "; the champion also had the lowest QLIKE"
    return (
        f"; on QLIKE, though, {best['forecaster']} was better ({best['qlike']:.4f} against the "
        f"champion's {champion['qlike'][0]:.4f})"
    )


@dataclass(frozen=True)
class BaselineComparison:
    """The champion's RMSE against the best baseline's, with the DM test between them."""

    champion_rmse: float
    best_baseline: str
    best_baseline_rmse: float
    dm_p_value: float

    @property
    def champion_wins(self) -> bool:
        return self.champion_rmse < self.best_baseline_rmse


def best_baseline_comparison(skill: pl.DataFrame, dm: pl.DataFrame) -> BaselineComparison:
    """What a "does the model beat the field's standard" check reads (DM on squared loss)."""
    ranked = skill.filter(~pl.col("forecaster").is_in([CHAMPION, SHADOW])).sort("rmse")
    champion = skill.filter(pl.col("forecaster") == CHAMPION)
    if ranked.height == 0 or champion.height == 0:
        raise ValueError("no champion or baseline forecast to compare on these days")
    best = ranked.row(0, named=True)
    test = dm.filter((pl.col("baseline") == best["forecaster"]) & (pl.col("loss") == "squared"))
    return BaselineComparison(
        champion_rmse=float(champion["rmse"][0]),
        best_baseline=str(best["forecaster"]),
        best_baseline_rmse=float(best["rmse"]),
        dm_p_value=float(test["p_value"][0]) if test.height else float("nan"),
    )
