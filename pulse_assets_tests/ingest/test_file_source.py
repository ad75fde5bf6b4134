from datetime import date

import polars as pl
import pytest

from pulse_assets.config import SourceSchema
from pulse_assets.errors import ConfigError, SourceError
from pulse_assets.ingest import ingest_window, load_source

PLUGIN = "pulse_assets.ingest.file_source:FileSource"
SCHEMA = SourceSchema.model_validate({"columns": {"price": {"type": "float", "gt": 0}}})


def file_source(path, **params):
    defaults = {
        "path": str(path),
        "time_column": "ts",
        "entity_column": "ticker",
        "columns": {"price": "px"},
    }
    return load_source("mine", PLUGIN, defaults | params)


def test_csv_glob_is_read_and_mapped(tmp_path):
    (tmp_path / "a.csv").write_text("ts,ticker,px\n2016-01-04,AAA,10.5\n2016-01-05,AAA,11\n")
    (tmp_path / "b.csv").write_text("ts,ticker,px\n2016-01-04,BBB,20\n2016-02-01,BBB,21\n")
    frame = file_source(tmp_path / "*.csv").fetch(date(2016, 1, 1), date(2016, 2, 1))
    assert frame.columns == ["date", "entity", "price"]
    assert sorted(frame.get_column("entity").to_list()) == ["AAA", "AAA", "BBB"]


def test_parquet_with_aware_timestamps_takes_the_day_in_the_configured_zone(tmp_path):
    pl.DataFrame(
        {
            "ts": ["2016-01-05T03:30:00Z", "2016-01-05T15:00:00Z"],
            "ticker": ["A", "A"],
            "px": [1.0, 2.0],
        }
    ).write_parquet(tmp_path / "p.parquet")
    frame = file_source(tmp_path / "p.parquet", time_zone="America/New_York").fetch(
        date(2016, 1, 1), date(2016, 2, 1)
    )
    assert frame.get_column("date").to_list() == [date(2016, 1, 4), date(2016, 1, 5)]


def test_constant_entity_when_the_file_has_none(tmp_path):
    (tmp_path / "a.csv").write_text("ts,px\n2016-01-04,1\n")
    frame = file_source(tmp_path / "a.csv", entity_column=None, entity="solo").fetch(
        date(2016, 1, 1), date(2016, 2, 1)
    )
    assert frame.get_column("entity").to_list() == ["solo"]


def test_unreadable_times_and_bad_values_are_quarantined_not_dropped(tmp_path):
    (tmp_path / "a.csv").write_text(
        "ts,ticker,px\n2016-01-04,A,1\nyesterday,A,2\n2016-01-05,A,-4\n"
    )
    result = ingest_window(
        file_source(tmp_path / "a.csv"), SCHEMA, date(2016, 1, 1), date(2016, 2, 1)
    )
    assert result.good.get_column("price").to_list() == [1.0]
    assert result.quarantined.get_column("price").to_list() == ["-4"]
    assert result.quarantined.get_column("quarantine_reason").to_list() == [
        "price must be > 0.0, got -4.0"
    ]
    assert result.quarantined.get_column("partition").to_list() == ["2016-01-05"]
    assert result.undated.get_column("price").to_list() == ["2"]
    assert result.undated.item(0, "quarantine_reason") == "date is missing or not a date"


def test_an_undated_row_has_the_same_fingerprint_in_every_window(tmp_path):
    (tmp_path / "a.csv").write_text("ts,ticker,px\n2016-01-04,A,1\nyesterday,A,2\n")
    source = file_source(tmp_path / "a.csv")
    january = ingest_window(source, SCHEMA, date(2016, 1, 1), date(2016, 2, 1))
    march = ingest_window(source, SCHEMA, date(2016, 3, 1), date(2016, 3, 2))
    fingerprint = january.undated.get_column("row_fingerprint")
    assert fingerprint.to_list() == march.undated.get_column("row_fingerprint").to_list()
    assert march.new_undated(fingerprint).height == 0
    assert march.new_undated([]).height == 1


def test_missing_file_names_the_source_and_path(tmp_path):
    with pytest.raises(
        SourceError, match=r"source 'mine' at .*missing\.csv: no file matches the path"
    ):
        file_source(tmp_path / "missing.csv").fetch(date(2016, 1, 1), date(2016, 2, 1))


def test_missing_column_names_the_column_and_file(tmp_path):
    (tmp_path / "a.csv").write_text("ts,ticker,price\n2016-01-04,A,1\n")
    with pytest.raises(SourceError, match=r"a\.csv: column\(s\) \['px'\] not found"):
        file_source(tmp_path / "a.csv").fetch(date(2016, 1, 1), date(2016, 2, 1))


def test_corrupt_parquet_is_a_source_error(tmp_path):
    (tmp_path / "p.parquet").write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(SourceError, match="cannot be read as parquet"):
        file_source(tmp_path / "p.parquet").fetch(date(2016, 1, 1), date(2016, 2, 1))


def test_unknown_plugin_param_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"source 'mine': invalid params .*colums"):
        load_source("mine", PLUGIN, {"path": "x", "time_column": "ts", "colums": {}})


def test_plugin_must_be_a_source_class():
    with pytest.raises(ConfigError, match="is not a Source subclass"):
        load_source("x", "pulse_assets.config:Settings", {})
    with pytest.raises(ConfigError, match="cannot import plugin module"):
        load_source("x", "pulse_assets.nowhere:Thing", {})
