import os
from datetime import date

import polars as pl
import pytest

from pulse_assets.errors import StoreError
from pulse_assets.storage import PartitionStore, content_hash


def rows(*days: int, value: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [date(2016, 1, d) for d in days],
            "entity": ["A"] * len(days),
            "v": [value] * len(days),
        }
    )


@pytest.fixture
def store(tmp_path):
    return PartitionStore(tmp_path / "store")


def test_write_partitions_splits_by_date_and_writes_empty_days(store):
    counts = store.write_partitions(
        "raw/x", rows(4, 4, 5), ["2016-01-04", "2016-01-05", "2016-01-06"]
    )
    assert counts == {"2016-01-04": 2, "2016-01-05": 1, "2016-01-06": 0}
    empty = store.read("raw/x", ["2016-01-06"])
    assert empty.height == 0
    assert empty.schema == rows(4).schema


def test_rewriting_a_partition_replaces_it_exactly(store):
    store.write_partitions("raw/x", rows(4, value=1.0), ["2016-01-04"])
    store.write_partitions("raw/x", rows(4, value=2.0), ["2016-01-04"])
    assert store.read("raw/x", ["2016-01-04"]).get_column("v").to_list() == [2.0]


def test_read_range_returns_the_union_in_time_order_and_opens_only_the_range(store, monkeypatch):
    store.write_partitions("raw/x", rows(6, 4, 5, 7), [f"2016-01-0{d}" for d in (4, 5, 6, 7)])
    opened = []
    original = store._read_file
    monkeypatch.setattr(
        store, "_read_file", lambda path: opened.append(path.name) or original(path)
    )
    frame = store.read_range("raw/x", "2016-01-05", "2016-01-06")
    assert frame.get_column("date").to_list() == [date(2016, 1, 5), date(2016, 1, 6)]
    assert opened == ["2016-01-05.parquet", "2016-01-06.parquet"]
    assert frame.n_chunks() == 1, "a union of files is one chunk: filters walk every chunk"


def test_rows_outside_the_partitions_are_refused_and_nothing_is_written(store):
    with pytest.raises(StoreError, match=r"1 row\(s\) of raw/x fall outside.*2016-01-05"):
        store.write_partitions("raw/x", rows(4, 5), ["2016-01-04"])
    assert store.keys("raw/x") == []


def test_a_failed_write_keeps_the_last_good_file_and_leaves_no_temp(store, monkeypatch):
    store.write_partitions("raw/x", rows(4, value=1.0), ["2016-01-04"])

    def refuse(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(
        StoreError, match="could not write partition 2016-01-04 of raw/x.*disk full"
    ):
        store.write_partitions("raw/x", rows(4, value=9.0), ["2016-01-04"])
    monkeypatch.undo()
    assert store.read("raw/x", ["2016-01-04"]).get_column("v").to_list() == [1.0]
    assert sorted(os.listdir(store.table_path("raw/x"))) == ["2016-01-04.parquet"]


def test_reading_a_missing_partition_names_it(store):
    store.write_partitions("raw/x", rows(4), ["2016-01-04"])
    with pytest.raises(
        StoreError, match=r"1 partition\(s\) of raw/x are not in the store.*2016-01-05"
    ):
        store.read("raw/x", ["2016-01-04", "2016-01-05"])


def test_corrupt_file_is_named(store):
    store.write_partitions("raw/x", rows(4), ["2016-01-04"])
    store.partition_path("raw/x", "2016-01-04").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="2016-01-04.parquet cannot be read"):
        store.read("raw/x", ["2016-01-04"])


def test_read_prefix_stops_at_the_first_gap(store):
    store.write_partitions("raw/x", rows(4, 5, 7), ["2016-01-04", "2016-01-05", "2016-01-07"])
    frame = store.read_prefix("raw/x", ["2016-01-04", "2016-01-05", "2016-01-06", "2016-01-07"])
    assert frame.get_column("date").to_list() == [date(2016, 1, 4), date(2016, 1, 5)]


def test_content_hash_is_stable_and_sensitive():
    assert content_hash(rows(4, 5)) == content_hash(rows(4, 5))
    assert content_hash(rows(4, 5)) != content_hash(rows(4, 5, value=2.0))


def test_the_next_write_of_a_table_removes_temp_files_a_killed_writer_left(store):
    store.write_partitions("raw/x", rows(4), ["2016-01-04"])
    folder = store.root / "raw" / "x"
    orphan = folder / ".2016-01-04.parquet.k1ll3d.tmp"
    orphan.write_bytes(b"half a parquet file")
    hour_ago = os.path.getmtime(orphan) - 3600
    os.utime(orphan, (hour_ago, hour_ago))
    live = folder / ".2016-01-05.parquet.wr1t1ng.tmp"  # a concurrent writer's, seconds old
    live.write_bytes(b"being written")
    other_table = store.root / "raw" / "y" / ".2016-01-04.parquet.old.tmp"
    other_table.parent.mkdir(parents=True)
    other_table.write_bytes(b"")
    os.utime(other_table, (hour_ago, hour_ago))

    store.write_partitions("raw/x", rows(5), ["2016-01-05"])

    assert not orphan.exists()
    assert live.exists() and other_table.exists()
    assert store.keys("raw/x") == ["2016-01-04", "2016-01-05"]
    assert store.remove_stale_temps("raw/y") == [".2016-01-04.parquet.old.tmp"]


def test_partitions_written_with_reordered_columns_read_together(store):
    store.write_partitions("raw/x", rows(4), ["2016-01-04"])
    store.write_partitions("raw/x", rows(5).select("v", "date", "entity"), ["2016-01-05"])
    frame = store.read("raw/x", ["2016-01-04", "2016-01-05"])
    assert frame.columns == ["date", "entity", "v"] and frame.height == 2


def test_partitions_with_different_columns_are_an_error_naming_them(store):
    store.write_partitions("raw/x", rows(4), ["2016-01-04"])
    store.write_partitions("raw/x", rows(5).with_columns(w=pl.lit(1)), ["2016-01-05"])
    with pytest.raises(StoreError, match=r"partition 2016-01-05 of raw/x has columns .*'w'"):
        store.read("raw/x", ["2016-01-04", "2016-01-05"])
