"""The blended feature table on real data: point in time, single day = range, labels apart."""

import math
from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pulse_assets.config import load_settings
from pulse_assets.defs.metadata import column_description
from pulse_assets.errors import FeatureError
from pulse_assets.features import build_daily_features, build_labels, feature_columns
from pulse_assets.features.pipeline import feature_descriptions

SPEC = load_settings().features
START, END = date(2016, 6, 1), date(2016, 12, 1)


def window_of(frames, first: date, last_exclusive: date):
    return {
        name: f.filter(pl.col("date").is_between(first, last_exclusive, closed="left"))
        for name, f in frames.items()
    }


def test_features_cover_trading_days_with_finite_values(real_raw_frames):
    table = build_daily_features(real_raw_frames, SPEC, START, END).frame
    trading_days = (
        real_raw_frames["market_prices"]
        .filter(pl.col("date").is_between(START, END, closed="left"))
        .height
    )
    assert table.height == trading_days
    values = table.select(feature_columns(table)).to_numpy()
    assert (values == values).all() and abs(values).max() < float("inf")
    assert table.get_column("date").is_unique().all()
    assert {"polls_staleness_days", "tweets_staleness_days", "sp500_log_return_z"} <= set(
        table.columns
    )
    assert not [c for c in table.columns if c.startswith("label_")]


def test_changing_raw_data_after_day_t_leaves_features_up_to_t_unchanged(real_raw_frames):
    t = date(2016, 9, 15)
    before = build_daily_features(real_raw_frames, SPEC, START, END).frame
    tampered = {
        name: frame.with_columns(
            pl.when(pl.col("date") > t).then(pl.col(c) * 3 + 1).otherwise(pl.col(c)).alias(c)
            for c in frame.columns
            if frame.schema[c].is_numeric()
        )
        for name, frame in real_raw_frames.items()
    }
    after = build_daily_features(tampered, SPEC, START, END).frame
    upto = pl.col("date") <= t
    assert_frame_equal(before.filter(upto), after.filter(upto))
    assert not before.filter(~upto).equals(after.filter(~upto))


@pytest.mark.parametrize("day", [date(2016, 6, 1), date(2016, 11, 9), date(2016, 11, 30)])
def test_one_day_alone_equals_the_same_day_inside_the_range(real_raw_frames, day):
    full = build_daily_features(
        window_of(real_raw_frames, START - timedelta(SPEC.lookback_days()), END), SPEC, START, END
    ).frame
    lookback = window_of(real_raw_frames, day - timedelta(SPEC.lookback_days()), day + timedelta(1))
    alone = build_daily_features(lookback, SPEC, day, day + timedelta(1)).frame
    assert alone.height == 1
    # rolling sums are updated online, so values agree to rounding, not bit for bit
    assert_frame_equal(alone, full.filter(pl.col("date") == day), check_exact=False, rel_tol=1e-9)


def test_rows_without_full_history_are_warm_up(real_raw_frames):
    first_market_day = real_raw_frames["market_prices"].get_column("date").min()
    short = window_of(real_raw_frames, first_market_day, first_market_day + timedelta(days=60))
    table = build_daily_features(
        short, SPEC, first_market_day, first_market_day + timedelta(days=60)
    )
    assert table.frame.height == 0
    assert table.warmup_rows > 30


def test_labels_are_the_next_trading_days_values(real_raw_frames):
    labels = build_labels(
        real_raw_frames, SPEC.labels, SPEC.spine, date(2016, 11, 4), date(2016, 11, 9)
    )
    by_day = {row["date"]: row for row in labels.iter_rows(named=True)}
    # 2016-11-07 (Mon) -> 2016-11-08 close 2139.56 from 2131.52; Friday looks to Monday
    assert set(by_day) == {date(2016, 11, 4), date(2016, 11, 7), date(2016, 11, 8)}
    closes = dict(real_raw_frames["market_prices"].select("date", "close").iter_rows())
    expected = math.log(closes[date(2016, 11, 9)] / closes[date(2016, 11, 8)])
    assert by_day[date(2016, 11, 8)]["label_sp500_log_return_next"] == pytest.approx(expected)
    assert by_day[date(2016, 11, 8)]["label_sp500_abs_return_next"] == pytest.approx(abs(expected))
    friday = math.log(closes[date(2016, 11, 7)] / closes[date(2016, 11, 4)])
    assert by_day[date(2016, 11, 4)]["label_sp500_log_return_next"] == pytest.approx(friday)


def test_the_last_label_is_unknown_until_the_next_day_is_ingested(real_raw_frames):
    frames = window_of(real_raw_frames, date(2016, 11, 1), date(2016, 11, 9))
    labels = build_labels(frames, SPEC.labels, SPEC.spine, date(2016, 11, 1), date(2016, 11, 9))
    assert labels.filter(pl.col("date") == date(2016, 11, 8)).row(0)[1] is None


def test_a_missing_input_or_ambiguous_entity_is_named(real_raw_frames):
    partial = {k: v for k, v in real_raw_frames.items() if k != "social_activity"}
    with pytest.raises(FeatureError, match=r"features need input\(s\) \['social_activity'\]"):
        build_daily_features(partial, SPEC, START, END)
    doubled = dict(real_raw_frames)
    doubled["political_polls"] = pl.concat(
        [
            real_raw_frames["political_polls"],
            real_raw_frames["political_polls"].with_columns(pl.lit("OTHER").alias("entity")),
        ]
    )
    with pytest.raises(FeatureError, match="'political_polls' has several entities on one day"):
        build_daily_features(doubled, SPEC, START, END)


def test_quality_facts_name_the_bad_columns_and_dates():
    from pulse_assets.features.quality import duplicated_dates, non_finite_counts

    frame = pl.DataFrame(
        {
            "date": [date(2016, 1, 4), date(2016, 1, 4), date(2016, 1, 5)],
            "a": [1.0, float("nan"), float("inf")],
            "b": [1.0, 2.0, 3.0],
            "label_x": [None, None, 1.0],
        }
    )
    assert non_finite_counts(frame) == {"a": 2}
    assert duplicated_dates(frame) == [date(2016, 1, 4)]


def test_every_feature_and_label_column_is_described(real_raw_frames):
    """The column schema in the UI describes each column of daily_features and daily_labels,
    from the configured steps (no column left blank)."""
    described = feature_descriptions(SPEC)
    features = build_daily_features(real_raw_frames, SPEC, START, END).frame
    labels = build_labels(real_raw_frames, SPEC.labels, SPEC.spine, START, END)
    for table in (features, labels):
        blank = [c for c in table.columns if not (described.get(c) or column_description(c))]
        assert not blank, (
            f"columns without a description: {blank}; add them to feature_descriptions"
        )
    assert described["sp500_log_return_rolling_volatility_20"] == (
        "standard deviation of sp500_log_return over the trailing 20 rows"
    )
    assert described["polls_margin"].startswith("political_polls.margin, known 2 day(s) after")
