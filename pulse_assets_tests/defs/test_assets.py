"""Dagster integration: dg.materialize on a temporary instance over real data."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pulse_assets.definitions import build_assets, build_resources
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.raw import raw_key
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.conftest import default_config
from pulse_assets_tests.http_server import Reply, scripted_server

RAW_FIRST, RAW_LAST = "2016-01-01", "2016-04-30"
FEATURE_FIRST, FEATURE_LAST = "2016-03-15", "2016-04-30"


@pytest.fixture
def instance():
    with dg.instance_for_test() as temp_instance:
        yield temp_instance


def materialize(settings, instance, keys, first, last, raise_on_error=True):
    return dg.materialize(
        build_assets(settings),
        selection=keys,
        resources=build_resources(settings),
        instance=instance,
        tags=range_tags(first, last),
        raise_on_error=raise_on_error,
    )


RAW_KEYS = [raw_key(name) for name in ("market_prices", "political_polls", "social_activity")]


def test_raw_features_and_labels_over_a_range_in_single_runs(small_settings, instance):
    raw = materialize(small_settings, instance, RAW_KEYS, RAW_FIRST, RAW_LAST)
    assert raw.success
    features = materialize(
        small_settings, instance, [FEATURES_KEY, LABELS_KEY], FEATURE_FIRST, FEATURE_LAST
    )
    assert features.success
    assert len(instance.get_runs()) == 2

    market = instance.get_materialized_partitions(raw_key("market_prices"))
    assert len(market) == 121 and {"2016-01-02", "2016-04-30"} <= market  # weekends included
    assert len(instance.get_materialized_partitions(FEATURES_KEY)) == 47

    store = PartitionStore(small_settings.store.root)
    assert store.read("raw/market_prices", ["2016-01-02"]).height == 0  # a Saturday: empty, typed
    trading_days = store.read_range("raw/market_prices", FEATURE_FIRST, FEATURE_LAST).height
    table = store.read_range("features/daily_features", FEATURE_FIRST, FEATURE_LAST)
    assert table.height == trading_days == 33 and table.get_column("date").is_sorted()
    labels = store.read_range("features/daily_labels", FEATURE_FIRST, FEATURE_LAST)
    # the last trading day's next day (2016-05-02) is not ingested yet: unknown, not guessed
    unknown = labels.filter(pl.col("label_sp500_abs_return_next").is_null()).get_column("date")
    assert unknown.to_list() == [date(2016, 4, 29)]

    event = instance.get_latest_materialization_event(FEATURES_KEY)
    meta = event.asset_materialization.metadata
    assert meta["dagster/row_count"].value == 33
    assert meta["warmup_rows_dropped"].value == 0
    checks = {e.check_name: e.passed for e in features.get_asset_check_evaluations()}
    assert checks == {"no_nan_or_inf": True, "unique_dates": True}
    assert event.asset_materialization.tags["dagster/data_version"] == meta["content_hash"].value


def test_one_day_materialized_alone_equals_the_range_run(small_settings, instance):
    materialize(small_settings, instance, RAW_KEYS, RAW_FIRST, RAW_LAST)
    materialize(small_settings, instance, [FEATURES_KEY], FEATURE_FIRST, FEATURE_LAST)
    store = PartitionStore(small_settings.store.root)
    in_range = store.read("features/daily_features", ["2016-04-12"])
    single = dg.materialize(
        build_assets(small_settings),
        selection=[FEATURES_KEY],
        partition_key="2016-04-12",
        resources=build_resources(small_settings),
        instance=instance,
    )
    assert single.success
    alone = store.read("features/daily_features", ["2016-04-12"])
    assert alone.height == 1
    assert_frame_equal(alone, in_range, check_exact=False, rel_tol=1e-9)


def test_rematerializing_a_range_replaces_it_exactly(small_settings, instance):
    key = raw_key("market_prices")
    materialize(small_settings, instance, [key], RAW_FIRST, RAW_LAST)
    store = PartitionStore(small_settings.store.root)
    first = store.read_range("raw/market_prices", RAW_FIRST, RAW_LAST)
    version = instance.get_latest_materialization_event(key).asset_materialization.tags[
        "dagster/data_version"
    ]
    materialize(small_settings, instance, [key], "2016-02-01", "2016-02-29")
    materialize(small_settings, instance, [key], RAW_FIRST, RAW_LAST)
    again = store.read_range("raw/market_prices", RAW_FIRST, RAW_LAST)
    assert_frame_equal(first, again)
    assert again.get_column("date").is_unique().all()
    assert len(store.keys("raw/market_prices")) == 121
    latest = instance.get_latest_materialization_event(key).asset_materialization.tags[
        "dagster/data_version"
    ]
    assert latest == version


def polls_file_source(path) -> dict:
    return {
        "plugin": "pulse_assets.ingest.file_source:FileSource",
        "params": {
            "path": str(path),
            "time_column": "day",
            "entity": "US",
            "columns": {"margin": "margin", "poll_count": "n"},
        },
        "schema": {
            "columns": {
                "margin": {"type": "float", "ge": -100, "le": 100},
                "poll_count": {"type": "int", "ge": 1},
            }
        },
    }


def polls_by_entity(path) -> dict:
    """The polls file source with one entity per row, from the file's ``who`` column."""
    source = polls_file_source(path)
    del source["params"]["entity"]
    source["params"]["entity_column"] = "who"
    return source


def settings_with_polls_file(make_settings, path):
    sources = default_config()["sources"]
    sources["political_polls"] = polls_file_source(path)
    return make_settings(sources=sources)


def test_quarantine_over_threshold_fails_the_check_and_blocks_features(
    make_settings, instance, tmp_path
):
    polls = tmp_path / "polls.csv"
    polls.write_text(
        "day,margin,n\n2016-01-04,3.5,2\n2016-01-05,250,2\n2016-01-06,abc,1\n2016-01-07,1.0,0\n"
    )
    settings = settings_with_polls_file(make_settings, polls)
    result = materialize(
        settings, instance, [*RAW_KEYS, FEATURES_KEY], RAW_FIRST, RAW_LAST, raise_on_error=False
    )
    assert not result.success
    check = next(
        e for e in result.get_asset_check_evaluations() if e.asset_key == raw_key("political_polls")
    )
    assert not check.passed
    assert check.metadata["quarantined_rows"].value == 3
    assert not instance.get_materialized_partitions(FEATURES_KEY)
    assert len(instance.get_materialized_partitions(raw_key("market_prices"))) == 121

    store = PartitionStore(settings.store.root)
    assert store.keys("raw/political_polls") == []  # nothing of the rejected run is stored
    quarantined = store.read("quarantine_rejected/political_polls", [result.run_id])
    assert sorted(quarantined.get_column("quarantine_reason").to_list()) == [
        "margin must be <= 100.0, got 250.0",
        "margin=abc is not a float",
        "poll_count must be >= 1.0, got 0",
    ]


def test_an_unreadable_source_fails_the_run_and_keeps_the_last_good_partitions(
    make_settings, instance, tmp_path
):
    polls = tmp_path / "polls.csv"
    polls.write_text("day,margin,n\n2016-01-04,3.5,2\n2016-01-05,2.5,2\n")
    settings = settings_with_polls_file(make_settings, polls)
    key = raw_key("political_polls")
    assert materialize(settings, instance, [key], RAW_FIRST, RAW_LAST).success
    store = PartitionStore(settings.store.root)
    good = store.read_range("raw/political_polls", RAW_FIRST, RAW_LAST)

    polls.write_text("day,spread,n\n2016-01-04,9.9,2\n")
    result = materialize(settings, instance, [key], RAW_FIRST, RAW_LAST, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert failure.cls_name == "SourceError"
    assert "source 'political_polls'" in failure.message
    assert "column(s) ['margin'] not found" in failure.message
    assert_frame_equal(store.read_range("raw/political_polls", RAW_FIRST, RAW_LAST), good)
    assert store.read("raw/political_polls", ["2016-01-04"]).get_column("margin").to_list() == [3.5]


def iris_source(url: str) -> dict:
    return {
        "plugin": "pulse_assets.ingest.http_source:HttpJsonSource",
        "params": {
            "base_url": url,
            "variables": ["margin", "poll_count"],
            "max_retries": 1,
            "backoff_s": 0.01,
            "timeout_s": 1.0,
        },
        "schema": {"columns": {"margin": {"type": "float"}, "poll_count": {"type": "int"}}},
    }


@pytest.mark.parametrize(
    ("bad_reply", "message"),
    [
        (Reply(status=500, body={"error": "down"}), "gave up after 2 attempt(s), last: HTTP 500"),
        (Reply(raw=b"<html>oops"), "answer is not valid JSON"),
        (Reply(status=401, body={}), "HTTP 401, the token was refused"),
        (
            Reply(
                body={"data": [{"timestamp": "2016-01-04", "entity": "US"}], "next_page_token": 7},
                delay_s=2.0,
            ),
            "ReadTimeout",
        ),
    ],
)
def test_a_failing_http_source_fails_the_run_and_keeps_stored_partitions(
    make_settings, instance, bad_reply, message
):
    good_page = Reply(
        body={
            "data": [
                {
                    "timestamp": "2016-01-04T12:00:00Z",
                    "entity": "US",
                    "margin": 2.5,
                    "poll_count": 3,
                }
            ]
        }
    )
    key = raw_key("political_polls")
    with scripted_server([good_page]) as (url, _):
        sources = default_config()["sources"] | {"political_polls": iris_source(url)}
        settings = make_settings(sources=sources)
        assert materialize(settings, instance, [key], "2016-01-01", "2016-01-10").success
    store = PartitionStore(settings.store.root)
    before = {k: store.read("raw/political_polls", [k]) for k in store.keys("raw/political_polls")}
    with scripted_server([bad_reply]) as (url, _):
        settings = make_settings(
            sources=default_config()["sources"] | {"political_polls": iris_source(url)}
        )
        result = materialize(
            settings, instance, [key], "2016-01-01", "2016-01-10", raise_on_error=False
        )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert error.cls_name == "SourceError" and message in error.message
    after = {k: store.read("raw/political_polls", [k]) for k in store.keys("raw/political_polls")}
    assert before.keys() == after.keys() and len(before) == 10
    for partition, frame in before.items():
        assert_frame_equal(after[partition], frame)


def test_features_refuse_to_run_on_missing_raw_history(small_settings, instance):
    materialize(small_settings, instance, RAW_KEYS, "2016-04-01", "2016-04-30")
    result = materialize(
        small_settings, instance, [FEATURES_KEY], "2016-04-20", "2016-04-30", raise_on_error=False
    )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.cause.message
    assert "partition(s) of raw/" in message and "materialize them before reading them" in message
    assert PartitionStore(small_settings.store.root).keys("features/daily_features") == []


def test_definitions_load_and_the_main_job_selects_every_asset():
    from pulse_assets.definitions import defs

    job = defs.resolve_job_def("pulse_main")
    assert set(job.asset_layer.executable_asset_keys) == {*RAW_KEYS, FEATURES_KEY, LABELS_KEY}


def stored_bytes(root, table: str) -> dict[str, bytes]:
    folder = Path(root).joinpath(*table.split("/"))
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.parquet"))}


def polls_csv(days: int, entities: int = 1, bad_rows: str = "") -> str:
    first = date(2016, 1, 4)
    lines = ["day,margin,n,who"]
    for offset in range(days):
        day = first + timedelta(days=offset)
        lines += [f"{day},{offset % 7 - 3}.5,{2 + e},E{e}" for e in range(entities)]
    return "\n".join(lines) + "\n" + bad_rows


def test_a_run_over_the_quarantine_limit_replaces_no_stored_partition(
    make_settings, instance, tmp_path
):
    polls = tmp_path / "polls.csv"
    polls.write_text(polls_csv(days=20))
    settings = settings_with_polls_file(make_settings, polls)
    key = raw_key("political_polls")
    assert materialize(settings, instance, [key], RAW_FIRST, RAW_LAST).success
    materializations_before = len(instance.fetch_materializations(key, limit=1000).records)
    before = {
        table: stored_bytes(settings.store.root, table)
        for table in ("raw/political_polls", "quarantine/political_polls")
    }
    assert len(before["raw/political_polls"]) == 121

    # the file goes bad: every count is written as a non-integer float
    polls.write_text(polls_csv(days=20).replace(",2,E0", ",2.5,E0"))
    result = materialize(settings, instance, [key], RAW_FIRST, RAW_LAST, raise_on_error=False)

    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert error.cls_name == "QuarantineError"
    assert "100.00% of rows quarantined (limit 5%)" in error.message
    assert "no stored partition was replaced" in error.message
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_share"
    )
    assert not check.passed and check.metadata["quarantined_rows"].value == 20
    for table, files in before.items():
        assert stored_bytes(settings.store.root, table) == files, f"{table} was changed"
    assert len(instance.fetch_materializations(key, limit=1000).records) == materializations_before
    rejected = PartitionStore(settings.store.root).read(
        "quarantine_rejected/political_polls", [result.run_id]
    )
    assert rejected.height == 20
    assert set(rejected.get_column("quarantine_reason")) == {"poll_count=2.5 is not a int"}


def test_a_row_with_an_unreadable_date_is_quarantined_once(make_settings, instance, tmp_path):
    polls = tmp_path / "polls.csv"
    polls.write_text(polls_csv(days=10, entities=4, bad_rows="not-a-day,1.5,3,E0\n"))
    sources = default_config()["sources"] | {"political_polls": polls_by_entity(polls)}
    settings = make_settings(sources=sources)
    key = raw_key("political_polls")

    first_day = materialize(settings, instance, [key], "2016-01-04", "2016-01-04", False)
    # 4 good rows and the undated one: 20% is over the limit, once
    assert not first_day.success
    for day in ("2016-01-05", "2016-01-06", "2016-01-07"):
        run = materialize(settings, instance, [key], day, day, raise_on_error=False)
        assert run.success, f"day {day} was blocked again by the undated row"
        check = next(
            e for e in run.get_asset_check_evaluations() if e.check_name == "quarantine_share"
        )
        assert check.metadata["quarantined_rows"].value == 0
    undated = PartitionStore(settings.store.root).read(
        "quarantine_undated/political_polls", ["__all__"]
    )
    assert undated.height == 1
    assert undated.item(0, "quarantine_reason") == "date is missing or not a date"
    assert instance.get_materialized_partitions(key) == {
        "2016-01-05",
        "2016-01-06",
        "2016-01-07",
    }


def test_one_bad_day_inside_a_clean_range_is_visible_and_can_block(
    make_settings, instance, tmp_path
):
    polls = tmp_path / "polls.csv"
    text = polls_csv(days=60, entities=5)
    bad_day = "2016-01-10"
    lines = [
        line.replace(",E1", ",E1").replace(line.split(",")[2], "x")
        if line.startswith(bad_day) and line.endswith(("E1", "E2"))
        else line
        for line in text.splitlines()
    ]
    polls.write_text("\n".join(lines) + "\n")
    sources = default_config()["sources"] | {"political_polls": polls_by_entity(polls)}
    key = raw_key("political_polls")

    warned = materialize(make_settings(sources=sources), instance, [key], RAW_FIRST, RAW_LAST)
    checks = {e.check_name: e for e in warned.get_asset_check_evaluations()}
    assert checks["quarantine_share"].passed  # 2 of 300 rows
    per_day = checks["partition_quarantine_share"]
    assert not per_day.passed and per_day.severity == dg.AssetCheckSeverity.WARN
    assert per_day.metadata["worst_share"].value == pytest.approx(0.4)
    assert bad_day in per_day.metadata["partitions"].value

    blocking = make_settings(
        sources=sources,
        quality={"block_on_partition_share": True, "max_partition_quarantine_share": 0.3},
    )
    before = stored_bytes(blocking.store.root, "raw/political_polls")
    blocked = materialize(blocking, instance, [key], RAW_FIRST, RAW_LAST, raise_on_error=False)
    assert not blocked.success
    message = blocked.get_step_failure_events()[0].step_failure_data.error.cause.message
    assert f"1 day(s) over 30% (worst first: {bad_day})" in message
    assert stored_bytes(blocking.store.root, "raw/political_polls") == before
