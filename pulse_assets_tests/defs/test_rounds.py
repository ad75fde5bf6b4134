"""The walk-forward through Dagster: rounds, the champion of the day, shadow challengers,
baselines and the scoreboard, on a temporary instance over real data."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest

from pulse_assets.definitions import build_assets, build_resources
from pulse_assets.defs.evaluation import RETRODICTION_KEY, SCOREBOARD_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.training import CURRICULUM_KEY, MODEL_KEY
from pulse_assets.storage import PartitionStore
from pulse_assets.training.audit import holder_at
from pulse_assets.training.registry import CHAMPION, VersionTags
from pulse_assets_tests.conftest import isolated_world

ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01", "2016-10-01", "2016-11-01", "2016-12-01"]
LABEL = "sp500_abs_return_next"
SMALL_MLP = {"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0}


@pytest.fixture(scope="module")
def walked(trained_world, tmp_path_factory):
    """Six monthly rounds, their retrodiction and the scoreboard, each as one run."""
    tmp = tmp_path_factory.mktemp("rounds")
    settings = isolated_world(trained_world, tmp, model=SMALL_MLP)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("PULSE_HOME", str(tmp / "pulse_home"))
        runs = {
            key: dg.materialize(
                build_assets(settings),
                selection=[key, CURRICULUM_KEY] if key == MODEL_KEY else [key],
                resources=build_resources(settings),
                instance=instance,
                tags=range_tags(ROUNDS[0], ROUNDS[-1]) if key != SCOREBOARD_KEY else {},
            )
            for key in (MODEL_KEY, RETRODICTION_KEY, SCOREBOARD_KEY)
        }
        yield {"settings": settings, "instance": instance, "runs": runs, "tmp": tmp}


def stored(walked, table: str) -> pl.DataFrame:
    return PartitionStore(walked["settings"].store.root).read(table, ROUNDS)


def test_each_round_trains_on_labels_known_before_its_start(walked):
    records = stored(walked, "models/forecast_model").sort("start")
    assert records.get_column("round").to_list() == ROUNDS
    registry = build_resources(walked["settings"])["registry"].get()
    for row in records.iter_rows(named=True):
        tags = VersionTags.of(registry.version(row["challenger"]))
        assert tags.cutoff == row["start"] == date.fromisoformat(row["round"])
        # the last training day's label resolves on the next trading day: before the cutoff
        assert tags.train_last < row["start"], row
    assert records.get_column("challenger").n_unique() == len(ROUNDS)
    assert records.item(0, "decision") == "first model: no champion to beat"


def test_the_champion_of_each_day_forecast_it_out_of_sample(walked):
    frame = stored(walked, "evaluation/retrodiction")
    assert frame.height > 100
    assert not frame.get_column("in_sample").any()
    registry = build_resources(walked["settings"])["registry"].get()
    history = registry.audit.history(registry.model_name)
    for row in frame.sample(20, seed=1).iter_rows(named=True):
        assert row["model_version"] == holder_at(history, CHAMPION, row["date"])
        cutoff = VersionTags.of(registry.version(row["model_version"])).cutoff
        assert cutoff <= row["date"]
    records = stored(walked, "models/forecast_model")
    by_round = dict(zip(records["round"], records["champion"], strict=True))
    assert (frame.get_column("model_version") == frame.get_column("round").replace(by_round)).all()


def test_shadow_forecasts_come_from_the_round_challenger(walked):
    frame = stored(walked, "evaluation/retrodiction")
    records = stored(walked, "models/forecast_model")
    later = frame.filter(pl.col("round") != ROUNDS[0])
    challengers = dict(zip(records["round"], records["challenger"], strict=True))
    shadowed = later.drop_nulls("challenger_version")
    assert shadowed.height > 0
    assert (
        shadowed.get_column("challenger_version")
        == shadowed.get_column("round").replace(challengers)
    ).all()
    for column in ("naive", "trailing_mean", "ewma", "garch"):
        assert frame.get_column(f"{column}_{LABEL}").null_count() == 0, column


def test_the_scoreboard_compares_the_champion_with_every_baseline(walked):
    run = walked["runs"][SCOREBOARD_KEY]
    assert run.success
    table = run.output_for_node("evaluation__scoreboard")
    forecasters = set(table.get_column("forecaster"))
    assert {"champion", "naive", "trailing_mean", "ewma", "garch"} <= forecasters
    baselines = table.filter(pl.col("forecaster") != "champion").drop_nulls("champion_dm_p_value")
    assert baselines.height == 4
    meta = run.asset_materializations_for_node("evaluation__scoreboard")[0].metadata
    assert "DM p = " in meta["verdict"].value
    for chart in ("forecast", "relative_loss", "loss_per_round", "cumulative_dm", "lineage"):
        assert meta[f"chart_{chart}"].value.startswith(f"![{chart}](data:image/png;base64,"), (
            f"the scoreboard's metadata lacks the {chart} chart"
        )


def test_re_running_a_round_registers_nothing_new(walked):
    settings, instance = walked["settings"], walked["instance"]
    registry = build_resources(settings)["registry"].get()
    before = [v.version for v in registry.versions()]
    again = dg.materialize(
        build_assets(settings),
        selection=[MODEL_KEY],
        resources=build_resources(settings),
        instance=instance,
        partition_key=ROUNDS[2],
    )
    assert again.success
    assert [v.version for v in registry.versions()] == before
    # nothing changed, so nothing is materialized and nothing downstream is made stale
    assert not again.asset_materializations_for_node("models__forecast_model")
    observed = again.asset_observations_for_node("models__forecast_model")[0].metadata
    assert observed["trained"].value is False
    assert observed["duplicate_of"].value == str(observed["challenger_version"].value)


def test_every_round_stores_each_forecasters_skill_and_the_champions_tests(walked):
    store = build_resources(walked["settings"])["sql_store"].metrics()
    model_name = walked["settings"].training.tracking.model_name
    champion = [r for r in store.history(model_name) if r.scope == "round:champion"]
    assert {r.window_start.isoformat() for r in champion} == set(ROUNDS)
    rmse = {r.window_start.isoformat(): r for r in champion if r.metric == "rmse"}
    frame = stored(walked, "evaluation/retrodiction").filter(pl.col("round") == ROUNDS[3])
    known = frame.drop_nulls([f"actual_{LABEL}", f"garch_{LABEL}"])
    expected = ((known[f"forecast_{LABEL}"] - known[f"actual_{LABEL}"]) ** 2).mean() ** 0.5
    assert rmse[ROUNDS[3]].value == pytest.approx(expected)
    assert rmse[ROUNDS[3]].naive_value > 0
    tests = {r.metric for r in champion if r.window_start.isoformat() == ROUNDS[3]}
    assert {"dm_p_vs_garch_squared", "dm_statistic_vs_ewma_absolute"} <= tests
    garch = [r for r in store.history(model_name) if r.scope == "round:garch"]
    assert {r.window_start.isoformat() for r in garch} == set(ROUNDS)


def test_mlflow_names_describes_and_ranks_versions_by_what_they_did_out_of_sample(walked):
    registry = build_resources(walked["settings"])["registry"].get()
    records = stored(walked, "models/forecast_model").sort("start")
    judged = records.row(1, named=True)  # round 2's challenger, judged at round 3
    info = registry.version(judged["challenger"])
    run = registry.client.get_run(info.run_id)
    cutoff = judged["cutoff"].isoformat()
    assert run.info.run_name == f"manual-{cutoff}"
    assert f"Challenger of round {judged['round']}" in run.data.tags["mlflow.note.content"]
    version = registry.client.get_model_version(registry.model_name, info.version)
    assert "shadow days" in version.description
    assert ("not promoted" in version.description) != (
        records.row(2, named=True)["champion"] == judged["challenger"]
    )
    assert run.data.metrics["shadow_rmse"] > 0 and run.data.metrics["shadow_days"] >= 5
    champion = records.row(0, named=True)["champion"]
    history = registry.client.get_metric_history(
        registry.version(champion).run_id, "retrodiction_garch_rmse"
    )
    assert {point.step for point in history} >= {201607}


def test_the_models_check_warns_by_the_latest_rounds_stored_forecasts(walked):
    """The check on models/forecast_model compares the champion of the day with the best
    baseline over the latest ``rounds.check_latest_rounds`` retrodicted rounds only."""
    settings = walked["settings"]
    settings = settings.model_copy(
        update={"rounds": settings.rounds.model_copy(update={"check_latest_rounds": 2})}
    )
    run = dg.materialize(
        build_assets(settings),
        selection=dg.AssetSelection.checks_for_assets(MODEL_KEY),
        resources=build_resources(settings),
        instance=walked["instance"],
    )
    check = next(e for e in run.get_asset_check_evaluations())
    assert check.check_name == "beats_best_baseline" and check.asset_key == MODEL_KEY
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rounds_range"].value == f"{ROUNDS[-2]}...{ROUNDS[-1]}"
    frame = stored(walked, "evaluation/retrodiction").filter(pl.col("round").is_in(ROUNDS[-2:]))
    columns = {"champion": "forecast", "naive": "naive", "trailing_mean": "trailing_mean"}
    columns |= {"ewma": "ewma", "garch": "garch"}
    known = frame.drop_nulls([f"actual_{LABEL}", *(f"{c}_{LABEL}" for c in columns.values())])
    rmse = {
        name: ((known[f"{c}_{LABEL}"] - known[f"actual_{LABEL}"]) ** 2).mean() ** 0.5
        for name, c in columns.items()
    }
    best = min((n for n in rmse if n != "champion"), key=rmse.__getitem__)
    assert check.metadata["best_baseline"].value == best
    assert check.metadata["champion_rmse"].value == pytest.approx(rmse["champion"], rel=1e-3)
    assert check.passed == (rmse["champion"] < rmse[best])


def test_each_round_materializes_its_curriculum_beside_its_model(walked):
    """The training step writes curriculum/curriculum for every round: the first rounds train
    with uniform weights and say why (too few champion errors known); a scored round's
    weights average 1 over its training rows and stay within curriculum.max_weight_ratio."""
    curriculum = stored(walked, "curriculum/curriculum")
    assert sorted(curriculum.get_column("round").unique().to_list()) == ROUNDS
    first = curriculum.filter(pl.col("round") == ROUNDS[0])
    assert first.get_column("reason").drop_nulls().str.contains("error").all()
    events = walked["instance"].get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_OBSERVATION, asset_key=CURRICULUM_KEY)
    )
    assert {e.event_log_entry.dagster_event.partition for e in events} == set(ROUNDS)
    scored = curriculum.filter(pl.col("reason").is_null())
    ratio = walked["settings"].curriculum.max_weight_ratio
    for _, rows in scored.group_by("round"):
        weights = rows.get_column("weight")
        assert weights.min() > 0 and weights.max() / weights.min() <= ratio + 1e-9


def test_every_column_of_the_round_tables_is_described(walked):
    """The UI's column schema describes each column of the model, curriculum, retrodiction
    and scoreboard tables (no blank description)."""
    for key in (MODEL_KEY, CURRICULUM_KEY, RETRODICTION_KEY, SCOREBOARD_KEY):
        event = walked["instance"].get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None, key
        schema = event.asset_materialization.metadata["dagster/column_schema"].value
        blank = [column.name for column in schema.columns if not column.description]
        assert not blank, f"{key.to_user_string()}: columns without a description: {blank}"
