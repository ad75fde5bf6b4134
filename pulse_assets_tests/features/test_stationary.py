"""Only stationary features reach the model: raw levels feed the steps and are dropped."""

from datetime import date

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from pulse_assets.config import FeaturesConfig, load_settings
from pulse_assets.features import build_daily_features, feature_columns
from pulse_assets.features.pipeline import blend
from pulse_assets.ingest import ingest_window, load_source

SETTINGS = load_settings()
SPEC = SETTINGS.features
MAX_SIDE_CHANGE = 0.5
DEFAULT_FEATURES = [
    "polls_margin",
    "sp500_staleness_days",
    "polls_staleness_days",
    "tweets_staleness_days",
    "sp500_log_return",
    "sp500_log_return_rolling_volatility_5",
    "sp500_log_return_rolling_volatility_20",
    "sp500_log_return_rolling_volatility_60",
    "sp500_close_momentum_5",
    "sp500_close_momentum_20",
    "sp500_close_rsi_14",
    "sp500_close_ma_gap_50",
    "polls_margin_change_5",
    "tweet_activity_z",
    "sp500_volume_z",
    "polls_count_z",
    "sp500_log_return_z",
    "sp500_log_return_rolling_volatility_5_z",
    "sp500_log_return_rolling_volatility_20_z",
    "sp500_log_return_rolling_volatility_60_z",
    "sp500_close_momentum_5_z",
    "sp500_close_momentum_20_z",
    "sp500_close_ma_gap_50_z",
]


@pytest.fixture(scope="module")
def default_span_frames() -> dict[str, pl.DataFrame]:
    """The embedded real data over the default config's whole span (2010-2017)."""
    start, end = SETTINGS.partitions.start, SETTINGS.partitions.end
    assert end is not None
    return {
        name: ingest_window(
            load_source(name, source.plugin, source.params), source.data_schema, start, end
        ).good
        for name, source in SETTINGS.sources.items()
    }


def full_table(frames: dict[str, pl.DataFrame], spec: FeaturesConfig) -> pl.DataFrame:
    return build_daily_features(frames, spec, SETTINGS.partitions.start, date(2018, 1, 1)).frame


def side_change(table: pl.DataFrame, column: str) -> float:
    """How far a column moves to the other side of its median between its two halves.

    The share of days above the series' median in the second half minus that share in the
    first half: a trending level spends one half below its median and the other above (near
    1), a stationary series about half of each half (near 0). Unlike a difference of yearly
    means, it does not mistake a volatility regime (2011's crisis, 2017's calm) for a trend.
    """
    values = table.get_column(column).cast(pl.Float64).to_numpy()
    assert len(values) >= 2 * 252, "the check needs years of rows"
    above = values > np.median(values)
    half = len(values) // 2
    return float(abs(above[half:].mean() - above[:half].mean()))


def test_the_default_features_hold_no_raw_level_column(default_span_frames):
    levels = {
        f"{inp.prefix}_{column}"
        for inp in SPEC.inputs.values()
        for column in inp.columns
        if column not in inp.emit_raw
    }
    assert {"sp500_close", "sp500_volume", "tweets_tweet_count", "polls_poll_count"} <= levels
    blended = blend(default_span_frames, SPEC).collect_schema().names()
    assert levels <= set(blended), "the levels are inputs of the steps"
    features = feature_columns(full_table(default_span_frames, SPEC))
    assert not levels & set(features)
    raw_emitted = {f"{inp.prefix}_{c}" for inp in SPEC.inputs.values() for c in inp.emit_raw}
    assert raw_emitted == {"polls_margin"} and raw_emitted <= set(features)
    assert features == DEFAULT_FEATURES


def test_no_default_feature_trends_over_the_default_span(default_span_frames):
    table = full_table(default_span_frames, SPEC)
    days = table.get_column("date")
    assert days.min() < date(2012, 1, 1) and days.max() > date(2017, 12, 1)
    changes = {column: side_change(table, column) for column in feature_columns(table)}
    trending = {column: round(c, 2) for column, c in changes.items() if c >= MAX_SIDE_CHANGE}
    assert not trending


def test_the_check_fails_for_the_raw_price_level(default_span_frames):
    raw = SPEC.model_dump(by_alias=True)
    raw["inputs"]["market_prices"]["emit_raw"] = ["close"]
    with_close = FeaturesConfig.model_validate(raw)
    table = full_table(default_span_frames, with_close)
    assert "sp500_close" in feature_columns(table)
    assert side_change(table, "sp500_close") >= MAX_SIDE_CHANGE


def test_emit_raw_must_name_an_input_column_and_indicators_cannot_take_a_raw_name():
    raw = SPEC.model_dump(by_alias=True)
    raw["inputs"]["market_prices"]["emit_raw"] = ["open"]
    with pytest.raises(ValidationError, match=r"emit_raw names \['open'\]"):
        FeaturesConfig.model_validate(raw)
    raw = SPEC.model_dump(by_alias=True)
    indicators = raw["steps"][1]["params"]["indicators"]
    indicators.append({"kind": "log_return", "column": "sp500_close", "name": "sp500_volume"})
    with pytest.raises(ValidationError, match=r"indicator name\(s\) \['sp500_volume'\]"):
        FeaturesConfig.model_validate(raw)
