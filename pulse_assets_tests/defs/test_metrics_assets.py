"""metrics/model_metrics through Dagster: three rounds trained and retrodicted on real data,
a hand-made rule impact, the metrics of every round in the output, observations and store."""

import math
from datetime import date, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from pulse_assets.definitions import build_assets, build_resources
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.metrics import METRICS_KEY, RULE_IMPACT_KEY, build_metrics_assets
from pulse_assets.defs.partitions import range_tags, round_partitions
from pulse_assets.defs.rules import IMPACT_KEY
from pulse_assets.defs.training import MODEL_KEY
from pulse_assets.evaluation.significance import Loss, diebold_mariano
from pulse_assets.metrics.history import model_history
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.conftest import isolated_world

ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01"]
LABEL = "sp500_abs_return_next"
BASELINES = ("naive", "trailing_mean", "ewma", "garch")
# rule impact per round, as (day of the round, rules fired, forecast, adjusted, actual):
# round 1: toward, toward, away, not fired -> share 2/3; round 2: nothing fired; round 3: toward
IMPACT = {
    ROUNDS[0]: [(1, 1, 0.02, 0.015, 0.01), (2, 2, 0.02, 0.012, 0.01), (3, 1, 0.02, 0.03, 0.01)]
    + [(4, 0, 0.02, 0.02, 0.01)],
    ROUNDS[1]: [(1, 0, 0.02, 0.02, 0.01)],
    ROUNDS[2]: [(1, 1, 0.01, 0.012, 0.02)],
}
SHARE = {ROUNDS[0]: 2 / 3, ROUNDS[1]: None, ROUNDS[2]: 1.0}


def hand_made_rule_impact(settings) -> dg.AssetsDefinition:
    """rules/rule_impact as the rule loop's asset writes it, with the rows of ``IMPACT``."""

    @dg.asset(
        key=RULE_IMPACT_KEY,
        partitions_def=round_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def rule_impact(context: dg.AssetExecutionContext) -> pl.DataFrame:
        rows = [
            {
                "date": date.fromisoformat(key) + timedelta(days=day),
                "round": key,
                "active_rule_ids": "r1",
                "rules_fired": fired,
                f"forecast_{LABEL}": forecast,
                f"adjusted_{LABEL}": adjusted,
                f"actual_{LABEL}": actual,
            }
            for key in context.partition_keys
            for day, fired, forecast, adjusted, actual in IMPACT[key]
        ]
        return pl.DataFrame(rows)

    return rule_impact


def assets(settings) -> list[dg.AssetsDefinition]:
    """The project's assets (without any metrics or rule-impact asset it may wire already),
    the hand-made rule impact and the metrics asset reading it."""
    mine = {METRICS_KEY, RULE_IMPACT_KEY}
    project = [a for a in build_assets(settings) if not mine & set(a.keys)]
    return [
        *project,
        hand_made_rule_impact(settings),
        *build_metrics_assets(settings, RULE_IMPACT_KEY),
    ]


@pytest.fixture(scope="module")
def measured(trained_world, tmp_path_factory):
    """Three monthly rounds trained, retrodicted, and their metrics, each step one run."""
    tmp = tmp_path_factory.mktemp("metrics_assets")
    settings = isolated_world(
        trained_world, tmp, model={"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0}
    )
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("PULSE_HOME", str(tmp / "pulse_home"))
        runs = {
            key: dg.materialize(
                assets(settings),
                selection=[key],
                resources=build_resources(settings),
                instance=instance,
                tags=range_tags(ROUNDS[0], ROUNDS[-1]),
            )
            for key in (MODEL_KEY, RETRODICTION_KEY, RULE_IMPACT_KEY, METRICS_KEY)
        }
        yield {"settings": settings, "instance": instance, "runs": runs}


def stored(measured, table: str) -> pl.DataFrame:
    return PartitionStore(measured["settings"].store.root).read(table, ROUNDS)


def figure(table: pl.DataFrame, round_key: str, scope: str, subject: str, metric: str):
    row = table.filter(
        (pl.col("round") == round_key)
        & (pl.col("scope") == scope)
        & (pl.col("subject") == subject)
        & (pl.col("metric") == metric)
    )
    assert row.height == 1, f"no single {round_key} {scope}/{subject}/{metric} row: {row}"
    return row.row(0, named=True)


def scored(frame: pl.DataFrame) -> pl.DataFrame:
    """Days where the champion, every baseline and the actual are known."""
    columns = [f"actual_{LABEL}", f"forecast_{LABEL}", *(f"{b}_{LABEL}" for b in BASELINES)]
    return frame.drop_nulls(columns).sort("date")


def skill(frame: pl.DataFrame) -> float:
    known = scored(frame)
    actual = known[f"actual_{LABEL}"].to_numpy()
    mse = [np.mean((known[f"{b}_{LABEL}"].to_numpy() - actual) ** 2) for b in BASELINES]
    return 1 - np.mean((known[f"forecast_{LABEL}"].to_numpy() - actual) ** 2) / min(mse)


def test_the_rule_impact_key_is_the_rule_loops():
    assert RULE_IMPACT_KEY == IMPACT_KEY, "wire metrics/model_metrics to rules/rule_impact's key"


def test_every_round_has_its_own_and_cumulative_figures(measured):
    assert all(run.success for run in measured["runs"].values())
    table = stored(measured, "metrics/model_metrics")
    assert sorted(table.get_column("round").unique()) == ROUNDS
    retro = stored(measured, "evaluation/retrodiction")
    for key in ROUNDS:
        upto = scored(retro.filter(pl.col("round") <= key))
        errors = (upto[f"forecast_{LABEL}"] - upto[f"actual_{LABEL}"]).to_numpy()
        cumulative = figure(table, key, "cumulative", "champion", "rmse")
        assert cumulative["value"] == pytest.approx(math.sqrt(np.mean(errors**2)), rel=1e-9)
        assert cumulative["days"] == upto.height
        own = scored(retro.filter(pl.col("round") == key))
        garch = (own[f"garch_{LABEL}"] - own[f"actual_{LABEL}"]).to_numpy()
        rmse = figure(table, key, "round", "garch", "rmse")["value"]
        assert rmse == pytest.approx(math.sqrt(np.mean(garch**2)), rel=1e-9), key
    last = scored(retro)
    test = diebold_mariano(
        last[f"forecast_{LABEL}"] - last[f"actual_{LABEL}"],
        last[f"ewma_{LABEL}"] - last[f"actual_{LABEL}"],
        Loss.ABSOLUTE,
    )
    statistic = figure(table, ROUNDS[-1], "cumulative", "champion", "dm_statistic_vs_ewma_absolute")
    assert statistic["value"] == pytest.approx(test.statistic, rel=1e-9)


def test_trust_delta_is_the_change_of_skill_from_the_previous_round(measured):
    table = stored(measured, "metrics/model_metrics")
    retro = stored(measured, "evaluation/retrodiction")
    first = figure(table, ROUNDS[0], "round", "champion", "trust_delta")
    assert first["value"] is None and first["note"].startswith("first round")
    for previous, key in zip(ROUNDS, ROUNDS[1:], strict=False):
        expected = skill(retro.filter(pl.col("round") == key)) - skill(
            retro.filter(pl.col("round") == previous)
        )
        delta = figure(table, key, "round", "champion", "trust_delta")["value"]
        assert delta == pytest.approx(expected, rel=1e-9), key
        low = figure(table, key, "round", "champion", "trust_delta_ci_low")["value"]
        high = figure(table, key, "round", "champion", "trust_delta_ci_high")["value"]
        assert low <= delta <= high


def test_symbolic_alignment_of_each_round_from_the_rule_impact(measured):
    table = stored(measured, "metrics/model_metrics")
    for key, share in SHARE.items():
        row = figure(table, key, "round", "rules", "alignment_share_toward")
        assert row["value"] == (pytest.approx(share) if share is not None else None), key
    nothing = figure(table, ROUNDS[1], "round", "rules", "alignment_share_toward")
    assert nothing["note"].startswith("no active rule fired") and nothing["days"] == 0
    change = figure(table, ROUNDS[0], "round", "rules", "alignment_rmse_change")["value"]
    expected = math.sqrt((0.005**2 + 0.002**2 + 0.02**2) / 3) - 0.01  # adjusted - forecast
    assert change == pytest.approx(expected, rel=1e-9)


def challenger_against_twin(rows: pl.DataFrame) -> tuple[np.ndarray, int]:
    """Per-day squared-loss differences, challenger minus its uniform twin, by hand (the
    challenger's forecast is the champion's where it is the champion), and the weighted days."""
    known = rows.with_columns(
        pl.coalesce(f"shadow_{LABEL}", f"forecast_{LABEL}").alias("challenger")
    ).drop_nulls(["challenger", f"uniform_twin_{LABEL}", f"actual_{LABEL}"])
    actual = known[f"actual_{LABEL}"].to_numpy()
    mine = known["challenger"].to_numpy() - actual
    twin = known[f"uniform_twin_{LABEL}"].to_numpy() - actual
    return mine**2 - twin**2, int((mine != twin).sum())


def test_the_curriculum_effect_is_each_challenger_against_its_uniform_twin(measured):
    table = stored(measured, "metrics/model_metrics")
    retro = stored(measured, "evaluation/retrodiction")
    weighted_rounds = 0
    for key in ROUNDS:
        for scope, rows in (
            ("round", retro.filter(pl.col("round") == key)),
            ("cumulative", retro.filter(pl.col("round") <= key)),
        ):
            differences, weighted = challenger_against_twin(rows)
            days = figure(table, key, scope, "curriculum", "weighted_days")
            assert (days["value"], days["days"]) == (weighted, differences.size), (key, scope)
            mean = figure(table, key, scope, "curriculum", "mse_difference")["value"]
            verdict = figure(table, key, scope, "curriculum", "weighted_mse")["note"]
            if weighted:
                assert mean == pytest.approx(differences.mean(), rel=1e-9), (key, scope)
                assert verdict.startswith("curriculum vs uniform weights"), verdict
            else:
                assert mean is None and "uniform weights" in verdict, verdict
        weighted_rounds += weighted > 0
    assert weighted_rounds, "no round trained with curriculum weights: the test checks nothing"


def test_each_round_is_observed_on_its_own_partition_rounded(measured):
    run = measured["runs"][METRICS_KEY]
    observations = run.asset_observations_for_node("metrics__model_metrics")
    by_round = {o.partition: o.metadata for o in observations}
    assert sorted(by_round) == ROUNDS
    assert by_round[ROUNDS[0]]["trust_delta"].value is None
    table = stored(measured, "metrics/model_metrics")
    for key in ROUNDS[1:]:
        observed = by_round[key]["trust_delta"].value
        exact = figure(table, key, "round", "champion", "trust_delta")["value"]
        assert observed == float(f"{exact:.4g}"), (key, observed, exact)
    assert by_round[ROUNDS[2]]["alignment_share_toward"].value == 1.0
    assert by_round[ROUNDS[1]]["champion_rmse"].value > 0


def test_the_store_holds_cumulative_and_recursive_figures_per_round(measured):
    settings = measured["settings"]
    store = build_resources(settings)["sql_store"].metrics()
    name = settings.training.tracking.model_name
    table = stored(measured, "metrics/model_metrics")
    cumulative = model_history(store, name, forecaster="champion", metric="rmse", kind="cumulative")
    assert [d.isoformat() for d in cumulative["round"]] == ROUNDS
    expected = [figure(table, k, "cumulative", "champion", "rmse")["value"] for k in ROUNDS]
    assert cumulative["value"].to_list() == pytest.approx(expected, rel=1e-12)
    naive = [figure(table, k, "cumulative", "naive", "rmse")["value"] for k in ROUNDS]
    assert cumulative["naive_value"].to_list() == pytest.approx(naive, rel=1e-12)
    shares = model_history(store, name, forecaster="rules", kind="recursive")
    shares = shares.filter(pl.col("metric") == "alignment_share_toward")
    assert shares["value"].to_list() == [pytest.approx(2 / 3), None, 1.0]
    delta = model_history(
        store, name, forecaster="champion", metric="trust_delta", kind="recursive"
    )
    assert delta["value"][0] is None and delta["value"].null_count() == 1


def test_one_round_alone_reads_every_round_before_it(measured):
    """Materialized alone, the last round's cumulative figures are those of the range run, and
    the store's history still has one figure per round (the latest)."""
    settings = measured["settings"]
    again = dg.materialize(
        assets(settings),
        selection=[METRICS_KEY],
        resources=build_resources(settings),
        instance=measured["instance"],
        partition_key=ROUNDS[-1],
    )
    assert again.success
    table = stored(measured, "metrics/model_metrics")
    alone = figure(table, ROUNDS[-1], "cumulative", "champion", "rmse")
    retro = scored(stored(measured, "evaluation/retrodiction"))
    assert alone["days"] == retro.height
    store = build_resources(settings)["sql_store"].metrics()
    history = model_history(
        store, settings.training.tracking.model_name, "champion", "rmse", kind="cumulative"
    )
    assert history.height == len(ROUNDS)
    assert history["value"][-1] == pytest.approx(alone["value"], rel=1e-12)


def test_the_curriculum_effect_chart_is_on_the_materialization(measured):
    materializations = measured["runs"][METRICS_KEY].asset_materializations_for_node(
        "metrics__model_metrics"
    )
    assert sorted(m.partition for m in materializations) == ROUNDS
    metadata = materializations[-1].metadata
    assert metadata["curriculum_effect_since_first_round"].value.startswith(
        "curriculum vs uniform weights over"
    )
    chart = metadata["chart_curriculum_effect"].value
    assert chart.startswith("![curriculum_effect](data:image/png;base64,iVBOR"), chart[:60]
