"""Knowledge time: day t's feature row uses only values known by t (date + published lag)."""

from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from pulse_assets.config import FeaturesConfig, load_settings
from pulse_assets.features import build_daily_features

SPEC = load_settings().features
POLLS = "political_polls"
START, END = date(2016, 6, 1), date(2016, 12, 1)
T = date(2016, 9, 15)  # a Thursday inside the campaign: polls end on every day around it


def with_lag(spec: FeaturesConfig, source: str, lag: int) -> FeaturesConfig:
    raw = spec.model_dump(by_alias=True)
    raw["inputs"][source]["published_lag_days"] = lag
    return FeaturesConfig.model_validate(raw)


def tamper(frames: dict[str, pl.DataFrame], source: str, dated: pl.Expr) -> dict:
    """Every numeric value of ``source`` on the days ``dated`` selects, changed."""
    frame = frames[source]
    changed = frame.with_columns(
        pl.when(dated).then(pl.col(c) * 3 + 1).otherwise(pl.col(c)).alias(c)
        for c in frame.columns
        if frame.schema[c].is_numeric()
    )
    assert not changed.equals(frame), "the tamper must change some values"
    return {**frames, source: changed}


def row(table: pl.DataFrame, day: date) -> pl.DataFrame:
    found = table.filter(pl.col("date") == day)
    assert found.height == 1, f"{day} is not a feature row"
    return found


def test_the_default_config_declares_a_two_day_lag_for_polls_only():
    lags = {name: inp.published_lag_days for name, inp in SPEC.inputs.items()}
    assert lags == {"market_prices": 0, POLLS: 2, "social_activity": 0}


def test_polls_known_after_t_leave_day_t_unchanged(real_raw_frames):
    lag = SPEC.inputs[POLLS].published_lag_days
    poll_days = set(real_raw_frames[POLLS].get_column("date"))
    assert {T - timedelta(days=2), T - timedelta(days=1), T} <= poll_days
    before = build_daily_features(real_raw_frames, SPEC, START, END).frame
    # fieldwork end d with d + lag > t: not yet published on t
    unknown_at_t = pl.col("date") > T - timedelta(days=lag)
    after = build_daily_features(
        tamper(real_raw_frames, POLLS, unknown_at_t), SPEC, START, END
    ).frame
    upto = pl.col("date") <= T
    assert_frame_equal(before.filter(upto), after.filter(upto))
    # the next trading day learns the poll that ended on t - 1
    assert not row(before, T + timedelta(days=1)).equals(row(after, T + timedelta(days=1)))


def test_a_poll_published_exactly_on_t_changes_day_t_and_not_the_day_before(real_raw_frames):
    lag = SPEC.inputs[POLLS].published_lag_days
    before = build_daily_features(real_raw_frames, SPEC, START, END).frame
    ended = T - timedelta(days=lag)
    after = build_daily_features(
        tamper(real_raw_frames, POLLS, pl.col("date") == ended), SPEC, START, END
    ).frame
    assert not row(before, T).equals(row(after, T))
    assert_frame_equal(before.filter(pl.col("date") < T), after.filter(pl.col("date") < T))


def test_without_the_lag_the_same_tamper_reaches_day_t(real_raw_frames):
    """The control: the tamper above is visible on day t, so only the lag keeps it out."""
    no_lag = with_lag(SPEC, POLLS, 0)
    before = build_daily_features(real_raw_frames, no_lag, START, END).frame
    after = build_daily_features(
        tamper(real_raw_frames, POLLS, pl.col("date") == T - timedelta(days=1)),
        no_lag,
        START,
        END,
    ).frame
    assert not row(before, T).equals(row(after, T))


def test_every_lagged_source_is_point_in_time(real_raw_frames):
    """Whatever the lag of each input, values known after t never reach day t."""
    spec = with_lag(with_lag(SPEC, POLLS, 3), "social_activity", 1)
    before = build_daily_features(real_raw_frames, spec, START, END).frame
    frames = real_raw_frames
    for name, inp in spec.inputs.items():
        unknown_at_t = pl.col("date") > T - timedelta(days=inp.published_lag_days)
        frames = tamper(frames, name, unknown_at_t)
    after = build_daily_features(frames, spec, START, END).frame
    upto = pl.col("date") <= T
    assert_frame_equal(before.filter(upto), after.filter(upto))
    assert not before.filter(~upto).equals(after.filter(~upto))


def weekday_frames(poll_day: date) -> dict[str, pl.DataFrame]:
    """Three weeks of a synthetic spine (weekdays) and one poll ending on ``poll_day``."""
    days = [date(2016, 9, 12) + timedelta(days=n) for n in range(21)]
    weekdays = [d for d in days if d.weekday() < 5]
    spine = pl.DataFrame(
        {"date": weekdays, "entity": "X", "close": [100.0 + n for n in range(len(weekdays))]}
    )
    polls = pl.DataFrame({"date": [poll_day], "entity": "P", "margin": [4.0]})
    return {"market_prices": spine, POLLS: polls}


def small_spec(lag: int) -> FeaturesConfig:
    return FeaturesConfig.model_validate(
        {
            "spine": "market_prices",
            "inputs": {
                "market_prices": {"prefix": "m", "columns": ["close"], "max_staleness_days": 3},
                POLLS: {
                    "prefix": "p",
                    "columns": ["margin"],
                    "max_staleness_days": 7,
                    "published_lag_days": lag,
                    "emit_raw": ["margin"],
                },
            },
            "steps": [{"type": "fillna", "params": {"fill_value": -1.0, "staleness_cap_days": 30}}],
        }
    )


def test_a_lag_landing_on_a_weekend_enters_the_next_trading_day_and_staleness_counts_from_it():
    thursday = date(2016, 9, 15)
    table = build_daily_features(
        weekday_frames(thursday), small_spec(lag=2), date(2016, 9, 12), date(2016, 10, 3)
    ).frame
    by_day = {r["date"]: r for r in table.iter_rows(named=True)}
    assert all(day.weekday() < 5 for day in by_day) and len(by_day) == 15
    assert by_day[date(2016, 9, 15)]["p_margin"] == -1.0  # fieldwork ended, not published
    assert by_day[date(2016, 9, 16)]["p_margin"] == -1.0
    monday = by_day[date(2016, 9, 19)]
    assert monday["p_margin"] == 4.0
    assert monday["p_staleness_days"] == 2.0  # known on Saturday the 17th
    # max_staleness_days (7) counts from the day it became known (Saturday), not from Thursday
    assert by_day[date(2016, 9, 23)]["p_margin"] == 4.0
    assert by_day[date(2016, 9, 23)]["p_staleness_days"] == 6.0
    assert by_day[date(2016, 9, 26)]["p_margin"] == -1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"market_prices": {"published_lag_days": 1}},
            "the spine 'market_prices' has published_lag_days 1",
        ),
        ({POLLS: {"published_lag_days": -1}}, "greater than or equal to 0"),
    ],
)
def test_lags_are_checked_at_load(change, message):
    raw = small_spec(lag=0).model_dump(by_alias=True)
    for source, values in change.items():
        raw["inputs"][source].update(values)
    with pytest.raises(ValidationError, match=message):
        FeaturesConfig.model_validate(raw)


def test_lookback_days_grow_by_the_longest_lag():
    assert small_spec(lag=5).lookback_days() == small_spec(lag=0).lookback_days() + 5
