"""Training, retrodiction, drift and the drift sensor on a temporary Dagster instance."""

import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch

from pulse_assets.config import Settings
from pulse_assets.definitions import build_assets, build_definitions, build_resources
from pulse_assets.defs.drift import DRIFT_KEY
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.tags import DRIFTED_FEATURES_TAG, TRIGGER_TAG
from pulse_assets.defs.training import MODEL_KEY
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.sql import connect


@pytest.fixture(scope="module")
def world(trained_world, tmp_path_factory):
    """A copy of the populated store, its own registry, and a champion trained through Dagster."""
    tmp = tmp_path_factory.mktemp("model_assets")
    shutil.copytree(trained_world["settings"].store.root, tmp / "store")
    raw = trained_world["raw"] | {
        "store": {"root": str(tmp / "store")},
        "sql": {"url": f"sqlite:///{tmp / 'pulse.db'}"},
    }
    raw["training"] = raw["training"] | {
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "retries": 0}
    }
    settings = Settings.model_validate(raw)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("PULSE_HOME", str(tmp / "pulse_home"))  # checkpoints and MLflow artifacts
        result = dg.materialize(
            build_assets(settings),
            selection=[MODEL_KEY],
            resources=build_resources(settings),
            instance=instance,
            tags={TRIGGER_TAG: "manual"},
        )
        assert result.success
        yield {"settings": settings, "instance": instance, "tmp": tmp, "training": result}


def materialize(world, keys, first, last):
    settings = world["settings"]
    return dg.materialize(
        build_assets(settings),
        selection=keys,
        resources=build_resources(settings),
        instance=world["instance"],
        tags=range_tags(first, last),
    )


def test_training_materialization_records_version_metrics_and_lineage(world):
    event = world["instance"].get_latest_materialization_event(MODEL_KEY)
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["model_version"] == "1" and meta["champion_version"] == "1" and meta["promoted"]
    assert meta["holdout_rmse"] > 0 and meta["holdout_naive_rmse"] > 0
    assert "| 1 | this | manual | challenger, champion |" in meta["lineage"]
    train_end = date.fromisoformat(meta["training_range"].split("...")[1])
    holdout_start = date.fromisoformat(meta["holdout_range"].split("...")[0])
    assert holdout_start == train_end + timedelta(days=1)


def test_retrodiction_over_a_range_forecasts_each_trading_day(world):
    result = materialize(world, [RETRODICTION_KEY], "2016-11-02", "2016-12-15")
    assert result.success
    store = PartitionStore(world["settings"].store.root)
    frame = store.read_range("evaluation/retrodiction", "2016-11-02", "2016-12-15")
    trading_days = store.read_range("features/daily_features", "2016-11-02", "2016-12-15").height
    assert frame.height == trading_days
    assert frame["forecast_sp500_abs_return_next"].null_count() == 0
    assert frame["actual_sp500_abs_return_next"].null_count() == 0
    assert set(frame["model_version"]) == {"1"}
    assert not frame["in_sample"].any()  # the holdout comes after the training range
    meta = (
        world["instance"]
        .get_latest_materialization_event(RETRODICTION_KEY)
        .asset_materialization.metadata
    )
    assert meta["sp500_abs_return_next_rmse"].value > 0
    engine = connect(world["settings"].sql.url)
    records = MetricsStore(engine).history("pulse_forecast", "1", "retrodiction")
    assert {(r.window_start, r.window_end) for r in records} == {
        (date(2016, 11, 2), date(2016, 12, 15))
    }


def test_a_pickle_planted_as_the_champion_fails_retrodiction_and_is_not_run(world):
    """The retrodiction asset (started by automation on its own) loads the champion: a pickle
    put in place of its weights is refused with what to do, and never runs."""
    from urllib.parse import urlparse

    from pulse_assets.definitions import build_resources as resources_of
    from pulse_assets.training.model_files import WEIGHTS_FILE
    from pulse_assets_tests.training.payload import Payload, is_live

    registry = resources_of(world["settings"])["registry"].get()
    source = registry.client.get_model_version(registry.model_name, "1").source
    weights = Path(urlparse(source).path) / WEIGHTS_FILE
    marker, kept = world["tmp"] / "marker", weights.read_bytes()
    try:
        torch.save({"w": Payload(marker)}, weights)
        assert is_live(weights, marker, "torch"), "the payload is not live"
        result = materialize_failing(world, [RETRODICTION_KEY], "2016-12-01", "2016-12-02")
        error = result.get_step_failure_events()[0].step_failure_data.error.cause
        assert error.cls_name == "ModelFileError" and "is not a safetensors file" in error.message
        assert not marker.exists()
    finally:
        weights.write_bytes(kept)
    assert materialize(world, [RETRODICTION_KEY], "2016-12-01", "2016-12-02").success


def materialize_failing(world, keys, first, last):
    settings = world["settings"]
    return dg.materialize(
        build_assets(settings),
        selection=keys,
        resources=build_resources(settings),
        instance=world["instance"],
        tags=range_tags(first, last),
        raise_on_error=False,
    )


def inject_drift(store: PartitionStore, first: str, last: str, column: str) -> None:
    table = "features/daily_features"
    keys = [k for k in store.keys(table) if first <= k <= last]
    frame = store.read(table, keys)
    shifted = frame.with_columns((pl.col(column) * 1.5 + 4 * pl.col(column).std()).alias(column))
    store.write_partitions(table, shifted, keys)


def test_drift_sensor_requests_one_retrain_per_episode(world):
    settings = world["settings"]
    defs = build_definitions(settings)
    sensor = defs.get_sensor_def("drift_sensor")
    resources = build_resources(settings)
    instance = world["instance"]

    def tick(cursor=None):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, definitions=defs
        ) as context:
            return sensor.evaluate_tick(context)

    first_tick = tick()
    assert first_tick.skip_message == "no drift report for champion version 1 yet"

    store = PartitionStore(settings.store.root)
    inject_drift(store, "2016-12-01", "2016-12-31", "sp500_close")
    assert materialize(world, [DRIFT_KEY], "2016-12-26", "2016-12-31").success
    report = store.read_range("drift/drift_report", "2016-12-26", "2016-12-31")
    assert report.filter((pl.col("feature") == "sp500_close") & pl.col("drifted")).height >= 2
    assert report.filter(pl.col("kind") == "multivariate").height == 1

    result = tick()
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags[TRIGGER_TAG] == "drift"
    assert "sp500_close" in request.tags[DRIFTED_FEATURES_TAG].split(",")
    assert request.run_key.startswith("drift:1:2016-12-")
    again = tick(cursor=result.cursor)
    assert not again.run_requests and again.skip_message.startswith(
        "no new drift report since 2016-12-30"
    )
    replay = tick()
    assert replay.run_requests[0].run_key == request.run_key  # same episode, same key: one run


def test_sensor_skips_plainly_without_a_champion(world, tmp_path):
    raw = world["settings"].model_dump(mode="json", by_alias=True)
    raw["training"]["tracking"]["model_name"] = "never_trained"
    settings = Settings.model_validate(raw)
    defs = build_definitions(settings)
    with dg.build_sensor_context(
        instance=world["instance"], resources=build_resources(settings), definitions=defs
    ) as context:
        result = defs.get_sensor_def("drift_sensor").evaluate_tick(context)
    assert result.skip_message.startswith("no champion model yet")


def test_retrodiction_without_a_champion_fails_with_what_to_do(world):
    raw = world["settings"].model_dump(mode="json", by_alias=True)
    raw["training"]["tracking"]["model_name"] = "never_trained"
    settings = Settings.model_validate(raw)
    result = dg.materialize(
        build_assets(settings),
        selection=[RETRODICTION_KEY],
        resources=build_resources(settings),
        instance=world["instance"],
        partition_key="2016-12-01",
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert (
        error.cls_name == "NoChampionError"
        and "materialize models/forecast_model first" in error.message
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
    schedule = defs.get_schedule_def("retrain_schedule")
    assert schedule.tags[TRIGGER_TAG] == "schedule" and schedule.job_name == "retrain"


RETRODICTION = "evaluation/retrodiction"
PLANTED_BIAS = 0.02


def plant_overshoot_on_up_days(store: PartitionStore, feature: str, label: str) -> None:
    """Every stored retrodiction row overshoots by PLANTED_BIAS where ``feature >= 0``: a
    pattern far larger than the model's own errors, so its outcome is known in advance."""
    keys = store.keys(RETRODICTION)
    frame = store.read(RETRODICTION, keys)
    features = store.read_range("features/daily_features", keys[0], keys[-1])
    up = (
        frame.select("date")
        .join(features.select("date", feature), on="date", how="left")
        .select((pl.col(feature) >= 0).fill_null(False))
        .to_series()
    )
    forecast = pl.col(f"forecast_{label}") + pl.when(up).then(PLANTED_BIAS).otherwise(0.0)
    planted = frame.with_columns(forecast.alias(f"forecast_{label}")).with_columns(
        pl.col(f"forecast_{label}").alias(f"adjusted_{label}"),
        (pl.col(f"forecast_{label}") - pl.col(f"actual_{label}")).alias(f"error_{label}"),
        (pl.col(f"forecast_{label}") - pl.col(f"actual_{label}")).alias(f"adjusted_error_{label}"),
    )
    store.write_partitions(RETRODICTION, planted.select(frame.columns), keys)


def test_the_rule_loop_finds_a_planted_pattern_and_rejects_a_harmful_rule(world, monkeypatch):
    """The rule assets through Dagster, with a known outcome: the symbolic miner must find the
    planted overshoot and a rule correcting it must become active; the LLM's harmful rule must
    fail its evaluation, its invalid and over-nested rules must be rejected at parse, and the
    next retrodiction must apply exactly the active rules."""
    import json as _json

    from pulse_assets.config import SymbolicRulesConfig
    from pulse_assets.defs.rules import ACTIVE_KEY, CANDIDATES_KEY, EVALUATIONS_KEY
    from pulse_assets.evaluation.retrodiction import with_rules
    from pulse_assets.features.pipeline import feature_columns
    from pulse_assets.rules.language import parse
    from pulse_assets.rules.loop import active_rules
    from pulse_assets.rules.repository import RuleRepository
    from pulse_assets_tests.http_server import Reply, scripted_server

    settings = world["settings"]
    label = "sp500_abs_return_next"
    assert materialize(world, [RETRODICTION_KEY], "2016-11-02", "2016-12-31").success
    store = PartitionStore(settings.store.root)
    plant_overshoot_on_up_days(store, "sp500_log_return", label)
    # about 40 out-of-sample windows: bins of two, five rows at least, single features only
    symbolic = SymbolicRulesConfig(quantiles=2, min_support=5, max_pair_features=0)
    rule_settings = settings.model_copy(
        update={"rules": settings.rules.model_copy(update={"symbolic": symbolic})}
    )
    harmful = f"IF sp500_log_return < 0 THEN {label} *= 10"
    invalid = f"IF __import__('os') THEN {label} *= 2"
    nested = "IF " + "(" * 250 + "sp500_log_return > 0" + ")" * 250 + f" THEN {label} *= 2"
    answer = {
        "rules": [
            {"name": n, "definition": d, "impact": "", "confidence": "low", "explanation": "x"}
            for n, d in (("harmful", harmful), ("invalid", invalid), ("nested", nested))
        ]
    }
    completion = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": _json.dumps(answer)},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }
    with scripted_server([Reply(body=completion)]) as (url, script):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        result = dg.materialize(
            build_assets(rule_settings),
            selection=[CANDIDATES_KEY, EVALUATIONS_KEY, ACTIVE_KEY],
            resources=build_resources(rule_settings),
            instance=world["instance"],
        )
    assert result.success
    prompt = script.requests[0]["body"]["messages"][1]["content"]
    assert "sp500_log_return_rolling_volatility_5" in prompt and '"version": "1"' in prompt
    assert "sp500_abs_return_next.rmse" in prompt and "training_period" in prompt

    def metadata(node: str) -> dict:
        event = result.asset_materializations_for_node(node)[0]
        return {k: v.value for k, v in event.metadata.items()}

    candidates = metadata("rules__rule_candidates")
    assert candidates["llm"].startswith("1 valid and 2 invalid rule(s) from gpt-4o-mini")
    assert candidates["patterns_found"] > 0 and candidates["rejected_invalid"] == 2
    repository = RuleRepository(connect(settings.sql.url))
    by_definition = {r.definition: r for r in repository.search(limit=1000).items}
    assert by_definition[invalid].status == "rejected"
    assert by_definition[nested[:2000]].status == "rejected"
    assert "more than 64 parentheses" in by_definition[nested[:2000]].description

    rejected = by_definition[parse(harmful).canonical()]
    assert [e["to_status"] for e in repository.events(rejected.rule_id)] == [
        "draft",
        "evaluated",
        "rejected",
    ]
    evaluation = repository.evaluations(rejected.rule_id)[0]
    assert evaluation["ci_high"] < 0 and not evaluation["accepted"]

    active = repository.search(status="active", limit=1000).items
    assert active and all(r.source == "symbolic" for r in active)
    assert all(parse(r.definition).sign() == -1 for r in active)  # each lowers the overshoot
    promoted = metadata("rules__active_rules")
    assert promoted["active"] == len(active)
    assert promoted["evaluation_rmse_with_rules"] < 0.6 * promoted["evaluation_rmse_model"]

    assert materialize(world, [RETRODICTION_KEY], "2016-12-01", "2016-12-31").success
    frame = store.read_range(RETRODICTION, "2016-12-01", "2016-12-31")
    features = store.read_range("features/daily_features", "2016-11-01", "2016-12-31")
    rules = [rule for _, rule in active_rules(repository, [label], feature_columns(features))]
    plain = frame.drop(f"adjusted_{label}", f"adjusted_error_{label}")
    expected = with_rules(plain, features, [label], rules)[f"adjusted_{label}"]
    assert (frame[f"adjusted_{label}"] - expected).abs().max() == 0.0
    assert (frame[f"adjusted_{label}"] < frame[f"forecast_{label}"]).sum() > 0


def test_new_raw_partitions_make_the_latest_downstream_days_materialize(world):
    """Declarative automation, evaluated as the automation sensor would: history is in place,
    then the latest raw partition lands, and the latest features and retrodiction follow."""
    settings = world["settings"]
    defs = build_definitions(settings)
    instance = world["instance"]
    raw_keys = [dg.AssetKey(["raw", n]) for n in settings.sources]
    assert materialize(world, raw_keys, "2016-10-01", "2016-12-30").success
    downstream = [
        dg.AssetKey(["features", "daily_features"]),
        dg.AssetKey(["features", "daily_labels"]),
    ]
    assert materialize(world, downstream, "2016-12-01", "2016-12-30").success
    assert materialize(world, [RETRODICTION_KEY], "2016-12-01", "2016-12-30").success
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert materialize(world, raw_keys, "2016-12-31", "2016-12-31").success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    requested = {
        r.key: r.true_subset.expensively_compute_partition_keys()
        for r in after.results
        if r.true_subset.size
    }
    assert requested.get(dg.AssetKey(["features", "daily_features"])) == {"2016-12-31"}, requested
    assert requested.get(RETRODICTION_KEY) == {"2016-12-31"}, requested
