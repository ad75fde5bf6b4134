"""Training rounds, retrodiction, drift and the drift sensor on a temporary Dagster instance."""

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from dagster_shared.error import SerializableErrorInfo

from pulse_assets.config import Settings
from pulse_assets.definitions import build_assets, build_definitions, build_resources
from pulse_assets.defs.drift import DRIFT_KEY
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.tags import CUTOFF_TAG, DRIFTED_FEATURES_TAG, LIVE_CUTOFF, TRIGGER_TAG
from pulse_assets.defs.training import MODEL_KEY
from pulse_assets.storage import PartitionStore
from pulse_assets.training.audit import holder_at
from pulse_assets.training.registry import CHALLENGER, CHAMPION, ModelRegistry, VersionTags
from pulse_assets_tests.conftest import isolated_world

ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01", "2016-10-01", "2016-11-01", "2016-12-01"]
LATEST = ROUNDS[-1]
RETRODICTION = "evaluation/retrodiction"


@pytest.fixture(scope="module")
def world(trained_world, tmp_path_factory):
    """A copy of the populated store, its own registry, and the rounds trained through Dagster;
    a challenger is trained every round and never promoted."""
    tmp = tmp_path_factory.mktemp("model_assets")
    settings = isolated_world(
        trained_world,
        tmp,
        model={"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0},
        # the first version stays champion (promotions are tested in test_rounds.py), so the
        # rule loop has months of one champion's retrodiction to mine
        promotion={"min_improvement": 0.99},
    )
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("PULSE_HOME", str(tmp / "pulse_home"))  # checkpoints and MLflow artifacts
        result = dg.materialize(
            build_assets(settings),
            selection=[MODEL_KEY],
            resources=build_resources(settings),
            instance=instance,
            tags={TRIGGER_TAG: "manual"} | range_tags(ROUNDS[0], LATEST),
        )
        assert result.success
        yield {"settings": settings, "instance": instance, "tmp": tmp, "training": result}


def materialize(world, keys, first, last, raise_on_error=True):
    settings = world["settings"]
    return dg.materialize(
        build_assets(settings),
        selection=keys,
        resources=build_resources(settings),
        instance=world["instance"],
        tags=range_tags(first, last),
        raise_on_error=raise_on_error,
    )


def registry_of(world) -> ModelRegistry:
    return build_resources(world["settings"])["registry"].get()


def records_of(world) -> pl.DataFrame:
    store = PartitionStore(world["settings"].store.root)
    return store.read("models/forecast_model", ROUNDS).sort("start")


def test_each_round_records_its_versions_figures_and_lineage(world):
    records = (
        world["training"]
        .output_for_node("models__forecast_model", "models__forecast_model")
        .sort("start")
    )
    assert records["round"].to_list() == ROUNDS
    assert records["trained"].all() and records["challenger"].n_unique() == len(ROUNDS)
    observations = {
        event.partition: event.asset_observation_data.asset_observation.metadata
        for event in world["training"].get_asset_observation_events()
        if event.asset_key == MODEL_KEY
    }
    assert sorted(observations) == ROUNDS
    for row in records.iter_rows(named=True):
        meta = observations[row["round"]]
        assert meta["champion_version"].value == int(row["champion"])
        assert meta["challenger_version"].value == int(row["challenger"])
        assert meta["shadow_days"].value == row["shadow_days"]
        assert isinstance(meta["train_rows"].value, int) and meta["train_rows"].value > 60
    assert observations[ROUNDS[0]]["shadow_days"].value == 0  # nothing to compare yet
    assert max(observations[r]["shadow_days"].value for r in ROUNDS[1:]) >= 5
    meta = world["training"].asset_materializations_for_node("models__forecast_model")[0].metadata
    last = records.row(-1, named=True)
    assert meta["rounds"].value == len(ROUNDS) and meta["new_versions"].value == len(ROUNDS)
    assert meta["latest_challenger"].value == last["challenger"]
    assert f"| {last['challenger']} | this | manual |" in meta["lineage"].value
    parent = VersionTags.of(registry_of(world).version(last["challenger"])).parent_version
    assert parent == last["champion"]


def test_retrodiction_over_rounds_forecasts_each_trading_day_by_its_champion(world):
    run = materialize(world, [RETRODICTION_KEY], ROUNDS[-2], LATEST)
    assert run.success
    store = PartitionStore(world["settings"].store.root)
    frame = store.read(RETRODICTION, ROUNDS[-2:])
    trading_days = store.read_range("features/daily_labels", ROUNDS[-2], "2016-12-31")
    assert frame.height == trading_days.height > 35
    assert frame["forecast_sp500_abs_return_next"].null_count() == 0
    assert not frame["in_sample"].any()
    registry = registry_of(world)
    history = registry.audit.history(registry.model_name)
    champions = {holder_at(history, CHAMPION, day) for day in frame["date"]}
    assert set(frame["model_version"]) == champions
    for row in frame.iter_rows(named=True):
        assert row["model_version"] == holder_at(history, CHAMPION, row["date"]), row
    observed = {
        event.partition
        for event in run.get_asset_observation_events()
        if event.asset_key == RETRODICTION_KEY
    }
    assert observed == set(ROUNDS[-2:])


def test_a_pickle_planted_as_the_champion_fails_retrodiction_and_is_not_run(world):
    """The retrodiction asset (started by automation on its own) loads the champion: a pickle
    put in place of its weights is refused with what to do, and never runs."""
    from urllib.parse import urlparse

    from pulse_assets.training.model_files import WEIGHTS_FILE
    from pulse_assets_tests.training.payload import Payload, is_live

    registry = registry_of(world)
    champion = records_of(world).filter(pl.col("round") == LATEST).item(0, "champion")
    source = registry.client.get_model_version(registry.model_name, champion).source
    weights = Path(urlparse(str(source)).path) / WEIGHTS_FILE
    marker, kept = world["tmp"] / "marker", weights.read_bytes()
    try:
        torch.save({"w": Payload(marker)}, weights)
        assert is_live(weights, marker, "torch"), "the payload is not live"
        result = materialize_failing(world, [RETRODICTION_KEY], LATEST, LATEST)
        error = failure_cause(result)
        assert error.cls_name == "ModelFileError" and "is not a safetensors file" in error.message
        assert not marker.exists()
    finally:
        weights.write_bytes(kept)
    assert materialize(world, [RETRODICTION_KEY], LATEST, LATEST).success


def failure_cause(result: dg.ExecuteInProcessResult) -> SerializableErrorInfo:
    """The exception the failed step raised (Dagster wraps it in its own error)."""
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and error.cause is not None, error
    return error.cause


def materialize_failing(world, keys, first, last):
    return materialize(world, keys, first, last, raise_on_error=False)


def inject_drift(store: PartitionStore, first: str, last: str, column: str) -> None:
    table = "features/daily_features"
    keys = [k for k in store.keys(table) if first <= k <= last]
    frame = store.read(table, keys)
    shifted = frame.with_columns((pl.col(column) * 1.5 + 4 * pl.col(column).std()).alias(column))
    store.write_partitions(table, shifted, keys)


DRIFTED = "sp500_log_return_rolling_volatility_5"


def sensor_tick(world, cursor=None):
    defs = build_definitions(world["settings"])
    with dg.build_sensor_context(
        instance=world["instance"],
        cursor=cursor,
        resources=build_resources(world["settings"]),
        definitions=defs,
    ) as context:
        return defs.get_sensor_def("drift_sensor").evaluate_tick(context)


def test_drift_sensor_requests_one_live_retrain_of_the_latest_round_per_episode(world):
    champion = records_of(world).filter(pl.col("round") == LATEST).item(0, "champion")
    first_tick = sensor_tick(world)
    assert first_tick.skip_message == f"no drift report for champion version {champion} yet"

    store = PartitionStore(world["settings"].store.root)
    inject_drift(store, "2016-12-01", "2016-12-31", DRIFTED)
    assert materialize(world, [DRIFT_KEY], "2016-12-26", "2016-12-31").success
    report = store.read_range("drift/drift_report", "2016-12-26", "2016-12-31")
    assert report.filter((pl.col("feature") == DRIFTED) & pl.col("drifted")).height >= 2
    assert report.filter(pl.col("kind") == "multivariate").height == 1

    result = sensor_tick(world)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == LATEST
    assert request.tags[TRIGGER_TAG] == "drift" and request.tags[CUTOFF_TAG] == LIVE_CUTOFF
    assert DRIFTED in request.tags[DRIFTED_FEATURES_TAG].split(",")
    assert request.run_key.startswith(f"drift:{champion}:2016-12-")
    again = sensor_tick(world, cursor=result.cursor)
    assert not again.run_requests and str(again.skip_message).startswith(
        "no new drift report since 2016-12-30"
    )
    replay = sensor_tick(world)
    assert replay.run_requests[0].run_key == request.run_key  # same episode, same key: one run


def test_a_drift_retrain_learns_the_drifted_days_once(world):
    """The live retrain of the latest round trains on everything labelled so far, moves the
    challenger from its cutoff on, and the sensor then skips; the same data again registers
    nothing."""
    registry = registry_of(world)
    before = [v.version for v in registry.versions()]

    def live_run():
        return dg.materialize(
            build_assets(world["settings"]),
            selection=[MODEL_KEY],
            resources=build_resources(world["settings"]),
            instance=world["instance"],
            partition_key=LATEST,
            tags={TRIGGER_TAG: "drift", CUTOFF_TAG: LIVE_CUTOFF, DRIFTED_FEATURES_TAG: DRIFTED},
        )

    run = live_run()
    assert run.success
    record = run.output_for_node("models__forecast_model", "models__forecast_model")
    assert record.item(0, "trained") is True and record.item(0, "duplicate_of") is None
    version = record.item(0, "challenger")
    assert version not in before
    tags = VersionTags.of(registry.version(version))
    assert tags.trigger == "drift" and tags.drifted_features == (DRIFTED,)
    assert tags.cutoff > date.fromisoformat(LATEST)
    assert date.fromisoformat(LATEST) <= tags.train_last < tags.cutoff  # the drifted days
    history = registry.audit.history(registry.model_name, CHALLENGER)
    assert holder_at(history, CHALLENGER, tags.cutoff) == version
    assert holder_at(history, CHALLENGER, date.fromisoformat(LATEST)) != version
    assert any(e.to_version == version and e.as_of == tags.cutoff for e in history)

    skipped = sensor_tick(world)
    assert not skipped.run_requests
    assert f"challenger {version} already trained on everything labelled" in str(
        skipped.skip_message
    )

    repeat = live_run()
    assert repeat.success
    assert not repeat.asset_materializations_for_node("models__forecast_model")
    observed = repeat.asset_observations_for_node("models__forecast_model")[0].metadata
    assert observed["trained"].value is False
    assert observed["duplicate_of"].value == version
    assert [v.version for v in registry.versions()] == [*before, version]


def test_sensor_skips_plainly_without_a_champion(world, tmp_path):
    raw = world["settings"].model_dump(mode="json", by_alias=True)
    raw["training"]["tracking"]["model_name"] = "never_trained"
    settings = Settings.model_validate(raw)
    defs = build_definitions(settings)
    with dg.build_sensor_context(
        instance=world["instance"], resources=build_resources(settings), definitions=defs
    ) as context:
        result = defs.get_sensor_def("drift_sensor").evaluate_tick(context)
    assert str(result.skip_message).startswith("no champion model yet")


def test_retrodiction_without_a_champion_fails_with_what_to_do(world):
    raw = world["settings"].model_dump(mode="json", by_alias=True)
    raw["training"]["tracking"]["model_name"] = "never_trained"
    settings = Settings.model_validate(raw)
    result = dg.materialize(
        build_assets(settings),
        selection=[RETRODICTION_KEY],
        resources=build_resources(settings),
        instance=world["instance"],
        partition_key=LATEST,
        raise_on_error=False,
    )
    assert not result.success
    error = failure_cause(result)
    assert (
        error.cls_name == "NoChampionError"
        and "materialize models/forecast_model for the first round" in error.message
    )


def test_freshness_and_automation_are_declared(world):
    defs = build_definitions(world["settings"])
    graph = defs.resolve_asset_graph()
    for key in (dg.AssetKey(["raw", "market_prices"]), dg.AssetKey(["features", "daily_features"])):
        assert graph.get(key).freshness_policy is not None
    for key in (dg.AssetKey(["features", "daily_features"]), RETRODICTION_KEY, DRIFT_KEY):
        assert graph.get(key).automation_condition is not None
    automation = defs.get_sensor_def("pulse_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = defs.get_schedule_def("round_schedule")
    assert schedule.job_name == "retrain"
    with dg.build_schedule_context(
        instance=world["instance"], scheduled_execution_time=datetime(2016, 12, 1, tzinfo=UTC)
    ) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert (
        request.tags[TRIGGER_TAG] == "schedule" and request.partition_key == ROUNDS[-1]
    )  # the round that begins at the tick


PLANTED_BIAS = 0.02


def test_new_raw_partitions_make_the_latest_downstream_days_materialize(world):
    """Declarative automation, evaluated as the automation sensor would: history is in place,
    then the latest raw partition lands, and the latest day's features and labels and the
    latest round's retrodiction follow."""
    settings = world["settings"]
    defs = build_definitions(settings)
    instance = world["instance"]
    raw_keys = [dg.AssetKey(["raw", n]) for n in settings.sources]
    assert materialize(world, raw_keys, "2016-10-01", "2016-12-30").success
    downstream = [
        dg.AssetKey(["features", "daily_features"]),
        dg.AssetKey(["features", "daily_labels"]),
    ]
    store = PartitionStore(settings.store.root)
    for key in downstream:  # the earlier days are in the store: the instance learns of them
        for day in store.keys("/".join(key.path)):
            if day < "2016-12-01":
                instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=day))
    assert materialize(world, downstream, "2016-12-01", "2016-12-30").success
    assert materialize(world, [RETRODICTION_KEY], LATEST, LATEST).success
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert materialize(world, raw_keys, "2016-12-31", "2016-12-31").success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    requested = requested_keys(after)
    assert requested.get(dg.AssetKey(["features", "daily_features"])) == {"2016-12-31"}, requested
    assert requested.get(dg.AssetKey(["features", "daily_labels"])) == {"2016-12-31"}, requested
    # the automation runs them; on its next tick the round holding that day follows
    assert materialize(world, downstream, "2016-12-31", "2016-12-31").success
    then = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert requested_keys(then).get(RETRODICTION_KEY) == {LATEST}, requested_keys(then)


def requested_keys(
    evaluation: dg.EvaluateAutomationConditionsResult,
) -> dict[dg.AssetKey, set[str]]:
    return {
        r.key: set(r.true_subset.expensively_compute_partition_keys())
        for r in evaluation.results
        if r.true_subset.size
    }


def test_a_weekend_does_not_become_the_latest_drift_report(world):
    """Saturday 2016-12-31 has no feature rows: its run materializes nothing, so the latest
    report (what the UI's overview and the drift sensor read) stays Friday's."""
    instance = world["instance"]
    assert materialize(world, [DRIFT_KEY], "2016-12-30", "2016-12-30").success
    friday = instance.get_latest_materialization_event(DRIFT_KEY)
    assert friday is not None and friday.dagster_event.partition == "2016-12-30"
    assert friday.asset_materialization is not None

    weekend = materialize(world, [DRIFT_KEY], "2016-12-31", "2016-12-31")
    assert weekend.success
    assert weekend.get_asset_materialization_events() == [], (
        "a day without feature rows was materialized as a drift report"
    )
    latest = instance.get_latest_materialization_event(DRIFT_KEY)
    assert latest is not None and latest.run_id == friday.run_id
    assert latest.dagster_event.partition == "2016-12-30"
