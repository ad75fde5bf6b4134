"""Each step against a hand computation; fillna and normalize also by property."""

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_assets.config import IndicatorSpec, NormalizeParams
from pulse_assets.features.steps import calculate_indicators, forward_fill_with_staleness, normalize

PRICES = [100.0, 102.0, 101.0, 105.0, 104.0, 108.0]


def price_frame(values=PRICES) -> pl.LazyFrame:
    days = [date(2016, 1, 4) + timedelta(days=i) for i in range(len(values))]
    return pl.LazyFrame({"date": days, "p": values})


def indicator(kind: str, window: int) -> list:
    spec = IndicatorSpec(kind=kind, column="p", windows=[window], name="out")
    return calculate_indicators(price_frame(), [spec]).collect().get_column("out").to_list()


def test_log_return():
    assert indicator("log_return", 1)[2] == pytest.approx(math.log(101 / 102))


def test_momentum_and_change():
    assert indicator("momentum", 2)[3] == pytest.approx(105 / 102 - 1)
    assert indicator("change", 2)[3] == pytest.approx(105 - 102)


def test_rolling_volatility_is_the_sample_std_of_the_trailing_window():
    values = indicator("rolling_volatility", 3)
    assert values[:2] == [None, None]
    assert values[4] == pytest.approx(np.std([101, 105, 104], ddof=1))


def test_ma_gap():
    assert indicator("ma_gap", 3)[5] == pytest.approx(108 / np.mean([105, 104, 108]) - 1)


def test_rsi_by_hand():
    # deltas over the last 3 steps: +4, -1, +4 -> gains 8/3, losses 1/3
    assert indicator("rsi", 3)[5] == pytest.approx(100 * (8 / 3) / (8 / 3 + 1 / 3))


def test_rolling_zscore_of_a_constant_window_is_zero():
    spec = IndicatorSpec(kind="rolling_zscore", column="p", windows=[3], name="z")
    out = calculate_indicators(price_frame([5.0] * 5), [spec]).collect().get_column("z").to_list()
    assert out == [None, None, 0.0, 0.0, 0.0]


def test_grouped_indicators_do_not_cross_entities():
    frame = pl.LazyFrame(
        {
            "date": [date(2016, 1, 4), date(2016, 1, 4), date(2016, 1, 5), date(2016, 1, 5)],
            "entity": ["a", "b", "a", "b"],
            "p": [1.0, 100.0, 2.0, 200.0],
        }
    )
    spec = IndicatorSpec(kind="momentum", column="p", windows=[1], name="m")
    out = calculate_indicators(frame, [spec], by="entity").collect().sort("entity", "date")
    assert out.get_column("m").to_list() == [None, 1.0, None, 1.0]


def test_fillna_fills_within_staleness_then_uses_the_fill_value():
    frame = pl.LazyFrame(
        {
            "date": [date(2016, 1, d) for d in range(1, 8)],
            "x": [None, 1.0, None, None, None, 5.0, None],
        }
    )
    out = forward_fill_with_staleness(
        frame, {"s": (["x"], 2)}, fill_value=0.0, staleness_cap_days=30
    ).collect()
    assert out.get_column("x").to_list() == [0.0, 1.0, 1.0, 1.0, 0.0, 5.0, 5.0]
    assert out.get_column("s_staleness_days").to_list() == [30.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0]


day_values = st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(values=day_values, max_staleness=st.integers(0, 10), cap=st.integers(1, 50))
def test_fillna_properties(values, max_staleness, cap):
    days = [date(2016, 1, 1) + timedelta(days=i) for i in range(len(values))]
    frame = pl.LazyFrame({"date": days, "x": values}, schema={"date": pl.Date, "x": pl.Float64})
    out = forward_fill_with_staleness(
        frame, {"s": (["x"], max_staleness)}, fill_value=-7.0, staleness_cap_days=cap
    ).collect()
    filled, staleness = out.get_column("x").to_list(), out.get_column("s_staleness_days").to_list()
    assert None not in filled
    last_seen = None
    for i, value in enumerate(values):
        if value is not None:
            last_seen = i
        age = None if last_seen is None else i - last_seen
        expected = values[last_seen] if age is not None and age <= max_staleness else -7.0
        assert filled[i] == expected
        assert staleness[i] == (cap if age is None else min(age, cap))


# Magnitudes of real series (prices, counts, shares) rounded as they are recorded: polars'
# sliding-window variance loses precision across jumps of hundreds of orders of magnitude.
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(-1e4, 1e4).map(lambda v: round(v, 4)), min_size=2, max_size=40),
    window=st.integers(2, 8),
    method=st.sampled_from(["z-score", "min-max"]),
    cut=st.integers(0, 39),
)
def test_normalize_matches_a_trailing_window_and_ignores_the_future(values, window, method, cut):
    frame = price_frame(values)
    params = NormalizeParams(method=method, window=window)
    out = (
        normalize(frame, ["p"], params)
        .collect()
        .get_column("p_z" if method == "z-score" else "p_mm")
    )
    for i in range(len(values)):
        if i < window - 1:
            assert out[i] is None
            continue
        trailing = np.array(values[i - window + 1 : i + 1])
        if method == "z-score":
            spread = trailing.std(ddof=1)
            expected = 0.0 if spread == 0 else (values[i] - trailing.mean()) / spread
        else:
            spread = trailing.max() - trailing.min()
            expected = 0.0 if spread == 0 else (values[i] - trailing.min()) / spread
        assert out[i] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # changing values after `cut` never changes the scaled values up to `cut`
    cut = min(cut, len(values) - 1)
    changed = values[: cut + 1] + [v * 3 + 1 for v in values[cut + 1 :]]
    again = normalize(price_frame(changed), ["p"], params).collect().get_column(out.name)
    assert again[: cut + 1].to_list() == out[: cut + 1].to_list()
