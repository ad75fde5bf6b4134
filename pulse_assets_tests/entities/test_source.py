"""The births-by-state source on the real data set, and a source sliced to some entities."""

from datetime import date

import polars as pl

from pulse_assets.config import US_STATES, Settings
from pulse_assets.entities import BirthsByStateDaily, EntitySlice
from pulse_assets.ingest import ingest_window, load_source
from pulse_assets_tests.conftest import default_config

PLUGIN = "pulse_assets.entities.source:BirthsByStateDaily"


def births() -> BirthsByStateDaily:
    source = load_source("births", PLUGIN, {})
    assert isinstance(source, BirthsByStateDaily)
    return source


def test_every_state_has_one_row_per_day():
    frame = births().fetch(date(1988, 3, 1), date(1988, 3, 8))
    assert frame.height == 7 * 51
    assert sorted(frame.get_column("entity").unique()) == sorted(US_STATES)
    assert frame.select(pl.col("date").min().alias("a"), pl.col("date").max().alias("b")).row(
        0
    ) == (
        date(1988, 3, 1),
        date(1988, 3, 7),
    )
    assert frame.schema["births"] == pl.Int64
    ca = frame.filter((pl.col("entity") == "CA") & (pl.col("date") == date(1988, 3, 1)))
    assert ca.item(0, "births") > 1000  # California, about 1,300 births a day in 1988


def test_an_impossible_written_day_has_no_date_and_does_not_replace_the_real_day():
    """The data set holds AK 1969-11-31 (2 births), which its derived date column rolled to
    1969-12-01, where AK's real count is 28."""
    frame = births().fetch(date(1969, 11, 25), date(1969, 12, 3)).filter(pl.col("entity") == "AK")
    assert frame.filter(pl.col("date") == date(1969, 12, 1)).get_column("births").to_list() == [28]
    undated = frame.filter(pl.col("date").is_null())
    assert undated.get_column("births").to_list() == [2]
    # the written day 1969-11-31 lies before 1969-12-01: a window ending there does not hold it
    assert births().fetch(date(1969, 12, 1), date(1969, 12, 3)).get_column("date").null_count() == 0


def test_validation_keeps_the_real_day_and_quarantines_the_impossible_one():
    settings = Settings.model_validate(default_config())
    schema = settings.entities.source.data_schema
    ingest = ingest_window(births(), schema, date(1969, 11, 25), date(1969, 12, 3))
    ak = ingest.good.filter((pl.col("entity") == "AK") & (pl.col("date") == date(1969, 12, 1)))
    assert ak.get_column("births").to_list() == [28]
    assert ingest.quarantined.height == 0
    assert ingest.undated.height > 0
    reasons = set(ingest.undated.get_column("quarantine_reason"))
    assert reasons == {"date is missing or not a date"}


def test_a_slice_reads_only_its_entities_and_says_which():
    sliced = EntitySlice(births(), ["NY", "CA", "NY"])
    frame = sliced.fetch(date(1988, 6, 1), date(1988, 6, 3))
    assert sorted(frame.get_column("entity").unique()) == ["CA", "NY"]
    assert frame.height == 4
    assert sliced.location().endswith("(entities CA, NY)")
    assert sliced.name == "births"
