from datetime import date

import polars as pl
import pytest

from pulse_assets.config import SourceSchema
from pulse_assets.errors import SchemaError
from pulse_assets.ingest import validate

SCHEMA = SourceSchema.model_validate(
    {
        "columns": {
            "close": {"type": "float", "gt": 0},
            "volume": {"type": "int", "ge": 0},
            "note": {"type": "str", "required": False},
        }
    }
)


def frame(rows):
    return pl.DataFrame(
        rows, schema=["date", "entity", "close", "volume", "note"], orient="row", strict=False
    )


def test_good_rows_pass_typed_and_sorted():
    result = validate(
        frame([(date(2016, 1, 5), "A", "10.5", "7", None), (date(2016, 1, 4), "A", "9", "3", "x")]),
        SCHEMA,
        "prices",
    )
    assert result.quarantined.height == 0
    assert result.good.schema["close"] == pl.Float64
    assert result.good.schema["volume"] == pl.Int64
    assert result.good.get_column("date").to_list() == [date(2016, 1, 4), date(2016, 1, 5)]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((date(2016, 1, 4), "A", "abc", "1", None), "close=abc is not a float"),
        ((date(2016, 1, 4), "A", "-3", "1", None), "close must be > 0.0, got -3.0"),
        ((date(2016, 1, 4), "A", None, "1", None), "close is missing"),
        ((date(2016, 1, 4), "A", "NaN", "1", None), "close is NaN or infinite"),
        ((date(2016, 1, 4), "A", "5", "-1", None), "volume must be >= 0.0, got -1"),
        ((None, "A", "5", "1", None), "date is missing or not a date"),
        ((date(2016, 1, 4), None, "5", "1", None), "entity is missing"),
    ],
)
def test_each_bad_value_is_quarantined_with_its_reason(row, reason):
    good_row = (date(2016, 1, 5), "A", "1", "1", None)
    result = validate(frame([row, good_row]), SCHEMA, "prices")
    assert result.good.height == 1
    assert result.quarantined.height == 1
    assert reason in result.quarantined.get_column("quarantine_reason")[0]
    assert result.quarantined_share == 0.5


def test_conflicting_copies_of_a_key_are_all_quarantined_and_exact_copies_kept_once():
    rows = [
        (date(2016, 1, 4), "A", "1", "1", None),
        (date(2016, 1, 4), "A", "2", "1", None),
        (date(2016, 1, 4), "B", "2", "1", None),
        (date(2016, 1, 4), "C", "3", "4", "x"),
        (date(2016, 1, 4), "C", "3", "4", "x"),
    ]
    result = validate(frame(rows), SCHEMA, "prices")
    assert result.good.get_column("entity").to_list() == ["B", "C"]
    assert result.good.filter(pl.col("entity") == "C").get_column("volume").to_list() == [4]
    assert result.quarantined.get_column("close").to_list() == ["1", "2"]
    assert result.quarantined.get_column("quarantine_reason").to_list() == [
        "duplicate (entity, date)",
        "duplicate (entity, date)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9616100.0", 9616100),
        ("7", 7),
        ("3.000", 3),
        ("1e3", 1000),
        ("9007199254740993", 9007199254740993),  # past 2**53: exact only as an integer text
    ],
)
def test_integer_valued_text_passes_an_int_column(text, expected):
    result = validate(frame([(date(2016, 1, 4), "A", "1", text, None)]), SCHEMA, "prices")
    assert result.quarantined.height == 0
    assert result.good.get_column("volume").to_list() == [expected]


@pytest.mark.parametrize("text", ["1.5", "1e300", "inf", "NaN", "9007199254740993.0"])
def test_a_float_that_is_not_an_exact_integer_fails_an_int_column(text):
    result = validate(frame([(date(2016, 1, 4), "A", "1", text, None)]), SCHEMA, "prices")
    assert result.good.height == 0
    assert result.quarantined.get_column("quarantine_reason").to_list() == [
        f"volume={text} is not a int"
    ]


def test_quarantine_keeps_the_original_text_of_bad_values():
    result = validate(frame([(date(2016, 1, 4), "A", "1,5", "1", None)]), SCHEMA, "prices")
    assert result.quarantined.get_column("close").to_list() == ["1,5"]


def test_missing_column_is_a_schema_error_naming_it():
    data = pl.DataFrame({"date": [date(2016, 1, 4)], "entity": ["A"], "close": [1.0]})
    with pytest.raises(
        SchemaError, match=r"source 'prices': column\(s\) \['volume', 'note'\] missing"
    ):
        validate(data, SCHEMA, "prices")
