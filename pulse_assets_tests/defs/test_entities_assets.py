"""The day × entity assets through Dagster: dg.materialize on a temporary instance over the real
births-by-state data, one Parquet file per (day, entity), quarantine and clear errors."""

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pulse_assets.config import Settings, store_root
from pulse_assets.definitions import build_definitions, build_resources
from pulse_assets.defs.entities import (
    ENTITIES_JOB,
    build_entity_assets,
    entity_features_key,
    quarantine_table,
    raw_entity_key,
    rejected_table,
    undated_table,
)
from pulse_assets.defs.partitions import range_tags
from pulse_assets.entities import entity_day_features
from pulse_assets.ingest import load_source
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.conftest import default_config

ENTITIES = ["AK", "CA", "NY"]


def entity_settings(tmp_path: Path, **entities: Any) -> Settings:
    raw = default_config()
    raw["store"] = {"root": str(tmp_path / "store")}
    raw["sql"] = {"url": f"sqlite:///{tmp_path / 'pulse.db'}"}
    raw["entities"] = raw["entities"] | {"entities": ENTITIES, "trailing_days": 7} | entities
    return Settings.model_validate(raw)


@pytest.fixture
def instance():
    with dg.instance_for_test() as temp_instance:
        yield temp_instance


def materialize(settings, instance, keys, first: str, last: str, raise_on_error=True):
    """Partitions ``first..last`` (``day|entity`` keys: a rectangle of days × entities)."""
    return dg.materialize(
        build_entity_assets(settings.entities, settings.quality),
        selection=keys,
        resources=build_resources(settings),
        instance=instance,
        tags=range_tags(first, last),
        raise_on_error=raise_on_error,
    )


def days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(count)]


def source_rows(settings: Settings, first: date, end: date) -> pl.DataFrame:
    config = settings.entities
    source = load_source(config.name, config.source.plugin, config.source.params)
    rows = source.fetch(first, end).filter(pl.col("entity").is_in(ENTITIES))
    return rows.drop_nulls("date")


def test_one_file_per_day_and_entity_with_point_in_time_features(tmp_path, instance):
    settings = entity_settings(tmp_path)
    raw_key, features_key = (
        raw_entity_key(settings.entities),
        entity_features_key(settings.entities),
    )
    assert materialize(settings, instance, [raw_key], "1988-01-01|AK", "1988-01-10|NY").success
    result = materialize(
        settings, instance, [raw_key, features_key], "1988-01-11|AK", "1988-01-12|NY"
    )
    assert result.success

    store = PartitionStore(store_root(settings))
    raw_keys = store.keys("entities/births_raw")
    assert len(raw_keys) == 12 * 3 and "1988-01-12|CA" in raw_keys
    cell = store.read("entities/births_raw", ["1988-01-12|CA"])
    expected = source_rows(settings, date(1988, 1, 12), date(1988, 1, 13))
    assert_frame_equal(cell, expected.filter(pl.col("entity") == "CA"))
    materialized = instance.get_materialized_partitions(features_key)
    assert materialized == {f"1988-01-{d}|{e}" for d in (11, 12) for e in ENTITIES}

    features = store.read("entities/births_features", sorted(materialized))
    history = source_rows(settings, date(1988, 1, 1), date(1988, 1, 13))
    assert_frame_equal(
        features, entity_day_features(history, "births", days(date(1988, 1, 11), 2), 7)
    )
    assert features.get_column("trailing_days_seen").to_list() == [7] * 6
    meta = result.asset_materializations_for_node("entities__births_features")[0].metadata
    assert meta["raw_rows_read"].value == 9 * 3  # days 4..12: d - 7 .. d for d = 11, 12


def test_a_cell_alone_equals_the_same_cell_in_a_range(tmp_path, instance):
    settings = entity_settings(tmp_path)
    raw_key, features_key = (
        raw_entity_key(settings.entities),
        entity_features_key(settings.entities),
    )
    assert materialize(settings, instance, [raw_key], "1988-02-01|AK", "1988-02-12|NY").success
    assert materialize(settings, instance, [features_key], "1988-02-09|AK", "1988-02-12|NY").success
    store = PartitionStore(store_root(settings))
    in_range = store.read("entities/births_features", ["1988-02-10|NY"])
    assert materialize(settings, instance, [features_key], "1988-02-10|NY", "1988-02-10|NY").success
    assert_frame_equal(store.read("entities/births_features", ["1988-02-10|NY"]), in_range)


def test_features_refuse_to_run_on_missing_raw_history(tmp_path, instance):
    settings = entity_settings(tmp_path)
    raw_key, features_key = (
        raw_entity_key(settings.entities),
        entity_features_key(settings.entities),
    )
    assert materialize(settings, instance, [raw_key], "1988-03-08|AK", "1988-03-10|NY").success
    result = materialize(
        settings, instance, [features_key], "1988-03-10|CA", "1988-03-10|CA", raise_on_error=False
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    message = error.cause.message if error.cause else error.message
    assert "partition(s) of entities/births_raw are not in the store" in message
    assert "1988-03-03|CA" in message and "materialize them before reading them" in message
    assert PartitionStore(store_root(settings)).keys("entities/births_features") == []


def test_impossible_written_days_are_quarantined_once_and_the_real_days_kept(tmp_path, instance):
    """Real 1969 records written as 1969-11-31 (rolled to 12-01 by the data set's own date
    column) have no readable date: quarantined per entity, counted by the first run only."""
    settings = entity_settings(
        tmp_path, partitions={"start": "1969-11-01", "end": "1970-01-01", "timezone": "UTC"}
    )
    key = raw_entity_key(settings.entities)
    first = materialize(settings, instance, [key], "1969-11-01|AK", "1969-12-31|NY")
    assert first.success
    store = PartitionStore(store_root(settings))
    assert store.read("entities/births_raw", ["1969-12-01|AK"]).get_column("births").to_list() == [
        28
    ]
    undated = store.read(undated_table(settings.entities), ["AK"])
    assert undated.get_column("births").to_list() == ["2"]
    assert set(undated.get_column("quarantine_reason")) == {"date is missing or not a date"}
    meta = first.asset_materializations_for_node("entities__births_raw")[0].metadata
    assert meta["quarantined_rows"].value >= 1 and meta["quarantined_share"].value < 0.05
    again = materialize(settings, instance, [key], "1969-11-01|AK", "1969-12-31|NY")
    meta = again.asset_materializations_for_node("entities__births_raw")[0].metadata
    assert meta["quarantined_rows"].value == 0


def test_bad_rows_over_the_limit_fail_the_check_and_replace_nothing(tmp_path, instance):
    good = "day,state,births\n" + "".join(
        f"1988-04-0{d},{e},{100 + d}\n" for d in range(1, 5) for e in ENTITIES
    )
    data = tmp_path / "births.csv"
    data.write_text(good)
    source = {
        "plugin": "pulse_assets.ingest.file_source:FileSource",
        "params": {
            "path": str(data),
            "time_column": "day",
            "entity_column": "state",
            "columns": {"births": "births"},
        },
        "schema": {"columns": {"births": {"type": "int", "ge": 1}}},
    }
    settings = entity_settings(tmp_path, source=source)
    key = raw_entity_key(settings.entities)
    assert materialize(settings, instance, [key], "1988-04-01|AK", "1988-04-04|NY").success
    folder = tmp_path / "store" / "entities" / "births_raw"
    before = {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}
    assert len(before) == 12

    data.write_text(good.replace("1988-04-02,CA,102", "1988-04-02,CA,-3"))
    result = materialize(settings, instance, [key], "1988-04-01|AK", "1988-04-04|NY", False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert error.cls_name == "QuarantineError"
    assert "8.33% of rows quarantined (limit 5%)" in error.message
    assert "no stored partition was replaced" in error.message
    check = next(e for e in result.get_asset_check_evaluations())
    assert not check.passed and check.metadata["quarantined_rows"].value == 1
    assert {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))} == before
    rejected = PartitionStore(store_root(settings)).read(
        rejected_table(settings.entities), [result.run_id]
    )
    assert rejected.select("entity", "births", "quarantine_reason").rows() == [
        ("CA", "-3", "births must be >= 1.0, got -3")
    ]
    assert PartitionStore(store_root(settings)).keys(quarantine_table(settings.entities)) == sorted(
        f"1988-04-0{d}|{e}" for d in range(1, 5) for e in ENTITIES
    )


def test_the_entities_job_spans_both_assets_on_day_x_entity_partitions(tmp_path):
    settings = entity_settings(tmp_path)
    job = build_definitions(settings).resolve_job_def(ENTITIES_JOB)
    assert set(job.asset_layer.executable_asset_keys) == {
        raw_entity_key(settings.entities),
        entity_features_key(settings.entities),
    }
    partitions = job.partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    assert partitions.partition_dimension_names == ["date", "entity"]
    assert len(partitions.get_partition_keys()) == 366 * 3  # 1988, a leap year, × 3 states


def test_turned_off_there_is_no_entity_asset_nor_job(tmp_path):
    settings = entity_settings(tmp_path, enabled=False)
    defs = build_definitions(settings)
    keys = {key for asset in defs.assets or [] for key in asset.keys}  # type: ignore[union-attr]
    assert raw_entity_key(settings.entities) not in keys
    assert ENTITIES_JOB not in {job.name for job in defs.jobs or []}
