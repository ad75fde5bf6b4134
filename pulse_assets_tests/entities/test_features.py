"""Per-entity daily feature rows: trailing statistics of the days before only, per entity."""

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import polars as pl
import pytest

from pulse_assets.entities import entity_day_features
from pulse_assets.errors import FeatureError

FIRST = date(2020, 1, 1)


def series(values: Mapping[str, Sequence[float | None]]) -> pl.DataFrame:
    """One row per entity and day from FIRST, ``None`` leaving the day out."""
    rows = [
        {"date": FIRST + timedelta(days=i), "entity": entity, "births": value}
        for entity, column in values.items()
        for i, value in enumerate(column)
        if value is not None
    ]
    return pl.DataFrame(rows, schema={"date": pl.Date, "entity": pl.String, "births": pl.Int64})


def day(n: int) -> date:
    return FIRST + timedelta(days=n)


def test_trailing_statistics_use_the_days_before_only():
    values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    rows = entity_day_features(series({"A": values}), "births", [day(9)], trailing_days=4)
    row = rows.row(0, named=True)
    window = [50, 60, 70, 80, 90][1:]  # days 5..8: [d - 4, d)
    mean = sum(window) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in window) / 3)
    assert row["births"] == 100
    assert row["trailing_mean"] == pytest.approx(mean)
    assert row["trailing_std"] == pytest.approx(std)
    assert row["trailing_days_seen"] == 4
    assert row["zscore"] == pytest.approx((100 - mean) / std)
    assert row["log_change_7d"] == pytest.approx(math.log(100 / 30))


def test_the_future_and_other_entities_do_not_change_a_row():
    base = {"A": [float(v) for v in range(1, 21)], "B": [5.0] * 20}
    tampered = {"A": base["A"][:12] + [1e6] * 8, "B": [1e6] * 20}
    days = [day(11)]
    assert (
        entity_day_features(series(base), "births", days, 7)
        .filter(pl.col("entity") == "A")
        .equals(
            entity_day_features(series(tampered), "births", days, 7).filter(pl.col("entity") == "A")
        )
    )


def test_a_row_per_entity_and_day_present_with_short_windows_null():
    frame = series({"A": [1, 2, None, 4], "B": [7, 7, 7, 7]})
    rows = entity_day_features(frame, "births", [day(0), day(1), day(2), day(3)], 5)
    assert rows.select("date", "entity").rows() == [
        (day(0), "A"),
        (day(0), "B"),
        (day(1), "A"),
        (day(1), "B"),
        (day(2), "B"),
        (day(3), "A"),
        (day(3), "B"),
    ]
    first_a = rows.row(0, named=True)
    assert first_a["trailing_days_seen"] == 0 and first_a["trailing_mean"] is None
    second_a = rows.row(2, named=True)  # one day before: a mean, no standard deviation
    assert second_a["trailing_mean"] == 1 and second_a["trailing_std"] is None
    constant_b = rows.row(6, named=True)  # B never changes: std 0, so no z-score
    assert constant_b["trailing_std"] == 0 and constant_b["zscore"] is None
    assert rows.get_column("log_change_7d").null_count() == rows.height  # no day 7 back


def test_missing_columns_are_named():
    with pytest.raises(FeatureError, match=r"lack column\(s\) \['births'\]"):
        entity_day_features(pl.DataFrame({"date": [FIRST], "entity": ["A"]}), "births", [FIRST], 5)
