"""Symbolic mining finds a planted error pattern in real retrodiction-shaped data; the
vectorized evaluator agrees with a plain loop and accepts only what truly helps."""

from datetime import date

import numpy as np
import polars as pl
import pytest

from pulse_assets.rules.evaluation import (
    block_bootstrap_counts,
    conflicts,
    evaluate_rules,
    select_rules,
)
from pulse_assets.rules.language import condition_expr, parse
from pulse_assets.rules.symbolic import MinerSettings, find_patterns, mine_rules

LABEL = "y"


def windows(real_raw_frames, bias_when_high: float) -> pl.DataFrame:
    """Real S&P 500 closes as the feature; the 'model' misses by a bias when volume is high."""
    market = (
        real_raw_frames["market_prices"].filter(pl.col("date") >= date(2014, 1, 1)).sort("date")
    )
    rng = np.random.default_rng(5)
    volume_z = ((market["volume"] - market["volume"].mean()) / market["volume"].std()).to_numpy()
    actual = np.abs(np.diff(np.log(market["close"].to_numpy()), prepend=np.nan))
    noise = rng.normal(0, 0.002, size=len(actual))
    forecast = actual + noise + np.where(volume_z > 1.0, bias_when_high, 0.0)
    frame = pl.DataFrame(
        {
            "date": market["date"],
            "volume_z": volume_z,
            "noise_feature": rng.normal(size=len(actual)),
            f"forecast_{LABEL}": forecast,
            f"actual_{LABEL}": actual,
        }
    ).drop_nulls()
    return frame.with_columns(
        (pl.col(f"forecast_{LABEL}") - pl.col(f"actual_{LABEL}")).alias(f"error_{LABEL}")
    )


def test_the_miner_finds_the_planted_pattern_and_is_deterministic(real_raw_frames):
    frame = windows(real_raw_frames, bias_when_high=0.006)
    settings = MinerSettings(quantiles=5, max_pair_features=2)
    candidates = mine_rules(frame, ["volume_z", "noise_feature"], LABEL, settings)
    assert candidates == mine_rules(frame, ["volume_z", "noise_feature"], LABEL, settings)
    best = candidates[0]
    assert (
        "volume_z >=" in best.definition
        and best.impact > 0
        and best.confidence in {"medium", "high"}
    )
    assert parse(best.definition).sign() == -1  # the model overshoots there: the rule lowers it
    assert all(
        "noise_feature" not in c.definition or "volume_z" in c.definition for c in candidates
    )


def test_no_pattern_in_pure_noise(real_raw_frames):
    frame = windows(real_raw_frames, bias_when_high=0.0)
    assert find_patterns(frame, ["noise_feature"], LABEL, MinerSettings()) == []


def test_bootstrap_counts_resample_blocks_of_rows():
    counts = block_bootstrap_counts(n=50, resamples=200, block=5, seed=1)
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, block_bootstrap_counts(50, 200, 5, 1))


def test_vectorized_evaluation_matches_a_plain_loop(real_raw_frames):
    frame = windows(real_raw_frames, bias_when_high=0.006).tail(300)
    rules = [
        parse("IF volume_z >= 1 THEN y -= 0.006"),
        parse("IF noise_feature > 0 THEN y *= 1.3"),
        parse("IF volume_z < -5 THEN y += 1"),
    ]
    scores = evaluate_rules(frame, rules, resamples=300, block=5, seed=3)
    counts = block_bootstrap_counts(frame.height, 300, 5, 3)
    actual, base = frame[f"actual_{LABEL}"].to_numpy(), frame[f"forecast_{LABEL}"].to_numpy()
    for rule, score in zip(rules, scores, strict=True):
        fired = frame.select(condition_expr(rule)).to_series().to_numpy()
        value = rule.adjustment.value.value
        rule_forecast = np.where(
            fired,
            {"*=": base * value, "+=": base + value, "-=": base - value}[rule.adjustment.op],
            base,
        )
        gains = []
        for b in range(300):
            weights = counts[b]
            rmse_base = np.sqrt((weights * (base - actual) ** 2).sum() / len(actual))
            rmse_rule = np.sqrt((weights * (rule_forecast - actual) ** 2).sum() / len(actual))
            gains.append(rmse_base - rmse_rule)
        low, high = np.percentile(gains, [2.5, 97.5])
        assert score.ci_low == pytest.approx(low) and score.ci_high == pytest.approx(high)
        assert score.fired_rows == int(fired.sum())
    assert [s.accepted for s in scores] == [True, False, False]


def test_conflicts_and_greedy_selection(real_raw_frames):
    frame = windows(real_raw_frames, bias_when_high=0.006).tail(300)
    rules = [
        parse("IF volume_z >= 1 THEN y -= 0.006"),
        parse("IF volume_z >= 1.5 THEN y += 0.01"),
        parse("IF volume_z >= 1 THEN y -= 0.003"),
    ]
    found = conflicts(frame, rules)
    assert [(c.first, c.second) for c in found] == [(0, 1), (1, 2)] and found[0].overlap_rows > 0
    chosen = select_rules(frame, rules, [0, 1, 2], max_rules=3)
    assert chosen[0] == 0 and 1 not in chosen
