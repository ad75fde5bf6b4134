"""The loop against its first model kept: the sentence says yes only when it is significant."""

from datetime import date, timedelta

import numpy as np
import polars as pl

from pulse_assets.evaluation.loop_verdict import loop_verdict

LABEL = "y"


def frames(loop_noise: float, kept_noise: float, days: int = 250, seed: int = 3):
    rng = np.random.default_rng(seed)
    dates = [date(2016, 1, 4) + timedelta(days=k) for k in range(days)]
    actual = rng.gamma(2.0, 0.004, days)
    impact = pl.DataFrame(
        {
            "date": dates,
            f"adjusted_{LABEL}": actual + rng.normal(0, loop_noise, days),
            f"actual_{LABEL}": actual,
        }
    )
    kept = pl.DataFrame(
        {"date": dates, f"forecast_{LABEL}": actual + rng.normal(0, kept_noise, days)}
    )
    return impact, kept


def test_a_clearly_better_loop_is_a_significant_yes():
    impact, kept = frames(loop_noise=0.002, kept_noise=0.006)
    verdict = loop_verdict(impact, kept, LABEL)
    assert verdict.loop_helped
    assert verdict.comparison.days == 250
    assert verdict.sentence().endswith("significantly? Yes.")


def test_the_same_forecasts_are_no_and_a_worse_loop_says_so():
    impact, kept = frames(loop_noise=0.004, kept_noise=0.004)
    same = kept.rename({f"forecast_{LABEL}": "f"}).join(impact, on="date")
    equal = loop_verdict(impact.with_columns(same["f"].alias(f"adjusted_{LABEL}")), kept, LABEL)
    assert not equal.loop_helped and equal.comparison.difference == 0.0
    assert "No (not at the 0.05 level)" in equal.sentence()
    worse = loop_verdict(*frames(loop_noise=0.008, kept_noise=0.002), LABEL)
    assert not worse.loop_helped
    assert worse.sentence().endswith("No: it did significantly worse.")


def test_only_days_both_forecast_and_with_a_known_actual_count():
    impact, kept = frames(loop_noise=0.003, kept_noise=0.003, days=60)
    impact = impact.with_columns(
        pl.when(pl.col("date") == pl.col("date").max())
        .then(None)
        .otherwise(pl.col(f"actual_{LABEL}"))
        .alias(f"actual_{LABEL}")
    )
    verdict = loop_verdict(impact, kept.head(50), LABEL)
    assert verdict.comparison.days == 50
