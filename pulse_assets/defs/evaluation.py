"""Retrodiction by round (the champion of each day, the challenger's shadow, the baselines) and
the scoreboard over every round."""

import tempfile
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.metadata import (
    embedded_charts,
    frame_metadata,
    markdown_table,
    rounded,
    versioned_output,
)
from pulse_assets.defs.partitions import round_partitions, rounds_covering
from pulse_assets.defs.resources import READ_EXISTING_ONLY, RegistryResource, SqlStoreResource
from pulse_assets.defs.training import MODEL_KEY, round_windows
from pulse_assets.evaluation.baselines import Baseline, fit_baselines
from pulse_assets.evaluation.charts import (
    cumulative_dm_chart,
    forecast_chart,
    loss_per_round_chart,
    relative_loss_chart,
)
from pulse_assets.evaluation.retrodiction import (
    abs_returns,
    retrodict_round,
)
from pulse_assets.evaluation.scoreboard import CHAMPION as CHAMPION_FORECASTER
from pulse_assets.evaluation.scoreboard import (
    SCOREBOARD_DESCRIPTIONS,
    best_baseline_comparison,
    dm_table,
    skill_table,
    winner_line,
)
from pulse_assets.metrics.forecast_skill import FORECAST_SKILL_NAMES
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.progress import Countdown
from pulse_assets.training.charts import lineage_chart
from pulse_assets.training.registry import (
    ModelRegistry,
    require_champion,
)
from pulse_assets.training.rounds import RoundWindow
from pulse_assets.training.service import ModelCache, ServiceLookup

RETRODICTION_KEY = dg.AssetKey(["evaluation", "retrodiction"])
SCOREBOARD_KEY = dg.AssetKey(["evaluation", "scoreboard"])
BEATS_BASELINE_CHECK = "beats_best_baseline"


def _round_figures(
    frame: pl.DataFrame, skill: pl.DataFrame, dm: pl.DataFrame, fallback: str | None
) -> dict[str, Any]:
    """A round's own numbers: rows, every forecaster's skill, the champion's DM p-values."""
    figures: dict[str, Any] = {"rows": frame.height}
    for row in skill.iter_rows(named=True):
        for metric in FORECAST_SKILL_NAMES:
            figures[f"{row['forecaster']}_{metric}"] = row[metric]
    for row in dm.iter_rows(named=True):
        figures[f"dm_p_vs_{row['baseline']}_{row['loss']}"] = row["p_value"]
    figures["in_sample_rows"] = int(frame["in_sample"].sum()) if frame.height else 0
    figures["garch"] = fallback or "fitted"
    return figures


def _record_round(
    store: MetricsStore,
    model_name: str,
    window: RoundWindow,
    label: str,
    frame: pl.DataFrame,
    skill: pl.DataFrame,
    dm: pl.DataFrame,
    run_id: str,
) -> None:
    """Each forecaster's skill in the round (the naive forecast's beside it), and the
    champion's DM statistics, in the metrics store under scope ``round:<forecaster>``."""
    by_name = {row["forecaster"]: row for row in skill.iter_rows(named=True)}
    naive = by_name.get(Baseline.NAIVE.value)
    if naive is None:
        return
    tests = {
        f"dm_{key}_vs_{row['baseline']}_{row['loss']}": row[column]
        for row in dm.iter_rows(named=True)
        for key, column in (("statistic", "dm_statistic"), ("p", "p_value"))
    }
    versions = ",".join(sorted(frame.get_column("model_version").unique().to_list()))
    for name, row in by_name.items():
        figures = {metric: row[metric] for metric in FORECAST_SKILL_NAMES}
        figures |= tests if name == CHAMPION_FORECASTER else {}
        store.record(
            model_name=model_name,
            model_version=versions,
            scope=f"round:{name}",
            window=(window.start, window.end - timedelta(days=1)),
            label=label,
            metrics={
                "model": figures,
                "naive": {k: naive.get(k, float("nan")) for k in figures},
            },
            rows=row["days"],
            run_id=run_id,
        )


def _log_round_to_mlflow(
    registry: ModelRegistry, window: RoundWindow, frame: pl.DataFrame, skill: pl.DataFrame
) -> None:
    """The round's out-of-sample skill of every forecaster on the MLflow run of each version
    that was champion in it, step = the round as YYYYMM, so MLflow ranks and plots versions by
    what they did after training, beside the baselines."""
    figures: dict[str, float | None] = {
        f"retrodiction_{row['forecaster']}_{metric}": row[metric]
        for row in skill.iter_rows(named=True)
        for metric in ("rmse", "qlike")
    }
    step = window.start.year * 100 + window.start.month
    for version in frame.get_column("model_version").unique().sort().to_list():
        registry.log_version_metrics(version, figures, step=step)


SCOREBOARD_CHARTS = {
    "forecast": forecast_chart,
    "relative_loss": relative_loss_chart,
    "loss_per_round": loss_per_round_chart,
    "cumulative_dm": cumulative_dm_chart,
}


def _scoreboard_charts(
    retrodiction: pl.DataFrame, rounds: pl.DataFrame, label: str, folder: Path
) -> list[Path]:
    """The walk-forward's charts: forecasts against each baseline with rolling RMSE, the
    champion's loss relative to the best baseline per round, loss per round, the cumulative
    DM statistic, and the registry's lineage with its promotions."""
    charts = [
        draw(retrodiction, label, folder / f"{name}.png")
        for name, draw in SCOREBOARD_CHARTS.items()
    ]
    if rounds.height:
        charts.append(lineage_chart(rounds, folder / "lineage.png"))
    return charts


def latest_rounds(frame: pl.DataFrame, count: int) -> pl.DataFrame:
    """The rows of the ``count`` latest rounds of a retrodiction frame."""
    keep = frame.get_column("round").unique().sort().tail(count)
    return frame.filter(pl.col("round").is_in(keep.implode()))


def _beats_baseline(frame: pl.DataFrame, label: str, rounds: int) -> dg.AssetCheckResult:
    compared = best_baseline_comparison(skill_table(frame, label), dm_table(frame, label))
    first, last = str(frame["round"].min()), str(frame["round"].max())
    metadata: dict[str, Any] = rounded(asdict(compared))
    return dg.AssetCheckResult(
        passed=compared.champion_wins,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata | {"rounds": rounds, "rounds_range": f"{first}...{last}"},
        description=f"latest {rounds} round(s) {first}...{last}: champion of the day RMSE "
        f"{compared.champion_rmse:.4g} against {compared.best_baseline} "
        f"{compared.best_baseline_rmse:.4g} (DM p {compared.dm_p_value:.3g})",
    )


def build_evaluation_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    label = settings.training.labels[0]
    round_defs = round_partitions(settings)
    one_round_back = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    fit_window = dg.TimeWindowPartitionMapping(
        start_offset=-rounds_covering(settings.training.window_days, settings),
        end_offset=0,
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        key=RETRODICTION_KEY,
        group_name="evaluation",
        description=(
            "Each day of a round forecast as the platform would have: by the version that was "
            "champion that day (from the alias audit), beside the round's challenger (shadow) and "
            "the standard baselines fitted on returns known before the round (naive, trailing "
            "mean, EWMA, GARCH(1,1)-t). Every row is out of sample for the version that made it. "
            "Rules apply downstream (rules/rule_impact), decided from earlier rounds only."
        ),
        ins={
            "rounds": dg.AssetIn(MODEL_KEY),
            "features": dg.AssetIn(FEATURES_KEY, partition_mapping=one_round_back),
            "label_rows": dg.AssetIn(LABELS_KEY, partition_mapping=fit_window),
        },
        partitions_def=round_defs,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"pytorch", "parquet"},
    )
    def retrodiction(
        context: dg.AssetExecutionContext,
        rounds: pl.DataFrame,
        features: pl.DataFrame,
        label_rows: pl.DataFrame,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> dg.Output[pl.DataFrame]:
        model_registry = registry.get()
        require_champion(model_registry)  # no champion: nothing forecast, say what to do
        service = ServiceLookup(model_registry, ModelCache(model_registry))
        metrics = sql_store.metrics()
        returns = abs_returns(label_rows, label)
        frames = []
        windows = round_windows(round_defs, list(context.partition_keys))
        countdown = Countdown("rounds retrodicted:", len(windows))
        for window in windows:
            fit_from = window.start - timedelta(days=settings.training.window_days)
            fitted = fit_baselines(
                returns.filter(pl.col("date").is_between(fit_from, window.start, closed="left")),
                settings.baselines,
            )
            frame = retrodict_round(
                features,
                label_rows,
                label,
                (window.start, window.end),
                service.champion,
                service.challenger,
                fitted,
                service.uniform_twin,
            ).with_columns(pl.lit(window.key).alias("round"))
            frames.append(frame)
            skill, dm = skill_table(frame, label), dm_table(frame, label)
            _record_round(
                metrics,
                model_registry.model_name,
                window,
                label,
                frame,
                skill,
                dm,
                context.run.run_id,
            )
            _log_round_to_mlflow(model_registry, window, frame, skill)
            context.log_event(
                dg.AssetObservation(
                    asset_key=RETRODICTION_KEY,
                    partition=window.key,
                    metadata=rounded(
                        _round_figures(frame, skill, dm, fitted.garch_fallback_reason)
                    ),
                )
            )
            context.log.info(f"round {window.key}: {countdown.advance()}")
        frame = pl.concat(frames, how="diagonal_relaxed")
        metadata = frame_metadata(frame) | {
            "in_sample_rows": int(frame["in_sample"].sum()),
        }
        return versioned_output(frame, metadata)

    @dg.asset(
        key=SCOREBOARD_KEY,
        group_name="evaluation",
        description=(
            "Every forecaster's out-of-sample RMSE, MAE, QLIKE and Theil's U2 over all retrodicted "
            "rounds, the champion's Diebold-Mariano tests against each baseline (squared and "
            "absolute loss), the rounds' promotions, and the charts: forecasts against every "
            "baseline with rolling RMSE, loss relative to the best baseline and per round, the "
            "cumulative DM statistic, and the registry lineage."
        ),
        ins={
            "retrodiction": dg.AssetIn(RETRODICTION_KEY, metadata={READ_EXISTING_ONLY: True}),
            "rounds": dg.AssetIn(MODEL_KEY, metadata={READ_EXISTING_ONLY: True}),
        },
        kinds={"matplotlib", "parquet"},
    )
    def scoreboard(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        rounds: pl.DataFrame,
        registry: RegistryResource,
    ) -> dg.Output[pl.DataFrame]:
        skill = skill_table(retrodiction, label)
        dm = dm_table(retrodiction, label)
        with tempfile.TemporaryDirectory(prefix="pulse-chart-") as folder:
            charts = (
                _scoreboard_charts(retrodiction, rounds, label, Path(folder))
                if skill.height
                else []
            )
            registry.get().log_report(
                "scoreboard",
                {f"{r['forecaster']}_rmse": r["rmse"] for r in skill.iter_rows(named=True)},
                charts,
            )
            images = embedded_charts(charts)
        first, last = retrodiction["date"].min(), retrodiction["date"].max()
        metadata: dict[str, Any] = {
            "verdict": winner_line(skill, dm),
            "out_of_sample_days": retrodiction.drop_nulls(f"actual_{label}").height,
            "span": f"{first!s}...{last!s}",
            "rounds": rounds.height,
            "promotions": int(rounds["promoted"].sum()) if rounds.height else 0,
            "skill": markdown_table(skill.with_columns(pl.col(pl.Float64).round_sig_figs(4))),
            "diebold_mariano": markdown_table(
                dm.with_columns(pl.col(pl.Float64).round_sig_figs(4))
            ),
        }
        metadata |= images or {"charts": "none: no day has every forecast and its actual known yet"}
        context.log.info(str(metadata["verdict"]))
        table = skill.join(
            dm.filter(pl.col("loss") == "squared").select(
                pl.col("baseline").alias("forecaster"),
                pl.col("dm_statistic").alias("champion_dm_statistic"),
                pl.col("p_value").alias("champion_dm_p_value"),
            ),
            on="forecaster",
            how="left",
        )
        described = frame_metadata(table, time_column=None, descriptions=SCOREBOARD_DESCRIPTIONS)
        return dg.Output(table, metadata=described | metadata)

    @dg.asset_check(
        asset=MODEL_KEY,
        name=BEATS_BASELINE_CHECK,
        additional_ins={
            "retrodiction": dg.AssetIn(RETRODICTION_KEY, metadata={READ_EXISTING_ONLY: True})
        },
        description=(
            f"Warns when, over the latest {settings.rounds.check_latest_rounds} retrodicted "
            "rounds, the champion of the day's RMSE is not below the best standard baseline's "
            "(naive, trailing mean, EWMA, GARCH); the DM p-value says whether it is significant."
        ),
    )
    def champion_beats_best_baseline(retrodiction: pl.DataFrame) -> dg.AssetCheckResult:
        if retrodiction.height == 0:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description="not evaluated: no round is retrodicted yet; materialize "
                "evaluation/retrodiction over the latest rounds (the evaluate job)",
            )
        latest = latest_rounds(retrodiction, settings.rounds.check_latest_rounds)
        return _beats_baseline(latest, label, latest["round"].n_unique())

    return [retrodiction, scoreboard, champion_beats_best_baseline]
