"""The drift report asset and the sensor that starts a retrain when drift persists."""

import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.features import FEATURES_KEY
from pulse_assets.defs.metadata import (
    embedded_charts,
    frame_metadata,
    markdown_table,
    versioned_output,
)
from pulse_assets.defs.partitions import round_partitions
from pulse_assets.defs.resources import PartitionStoreResource, RegistryResource
from pulse_assets.defs.tags import CUTOFF_TAG, DRIFTED_FEATURES_TAG, LIVE_CUTOFF, TRIGGER_TAG
from pulse_assets.defs.training import MODEL_KEY, RETRAIN_JOB
from pulse_assets.drift.charts import drift_heatmap
from pulse_assets.drift.episodes import current_episode
from pulse_assets.drift.report import (
    MULTIVARIATE_FEATURE,
    REPORT_DESCRIPTIONS,
    daily_reports,
    recent_checks,
)
from pulse_assets.training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    VersionTags,
    require_champion,
)

DRIFT_KEY = dg.AssetKey(["drift", "drift_report"])
DRIFT_TABLE = "drift/drift_report"


def _weekly_heatmap(
    report: pl.DataFrame, registry: ModelRegistry, latest_drifted: int
) -> dict[str, Any]:
    """Feature x week heatmap of a range run's checks (q-value and PSI), in the metadata and
    on an MLflow run; a run over fewer than two weeks has nothing to compare across."""
    weekly = report.with_columns(pl.col("date").dt.truncate("1w").cast(pl.String).alias("window"))
    if weekly.get_column("window").n_unique() < 2:
        return {"chart_drift_heatmap": "none: the run checked fewer than two weeks"}
    with tempfile.TemporaryDirectory(prefix="pulse-chart-") as folder:
        chart = drift_heatmap(weekly, Path(folder) / "drift_heatmap.png")
        registry.log_report("drift_report", {"latest_drifted_features": latest_drifted}, [chart])
        return dict(embedded_charts([chart]))


def build_drift_assets(
    settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    config = settings.drift

    @dg.asset(
        key=DRIFT_KEY,
        group_name="drift",
        description=(
            f"Per feature, the last {config.window_days} days against the champion's training rows: "
            f"KS or chi-square with Benjamini-Hochberg q < {config.fdr_q}, PSI and normalized "
            "Wasserstein effect sizes; on the latest day of a run also alibi-detect's MMD test. "
            "Reads the champion's training range from its registry tags."
        ),
        ins={
            "recent": dg.AssetIn(
                FEATURES_KEY,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-(config.window_days - 1), end_offset=0
                ),
            )
        },
        deps=[MODEL_KEY],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"scipy", "parquet"},
        output_required=False,
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        recent: pl.DataFrame,
        registry: RegistryResource,
        partition_store: PartitionStoreResource,
    ) -> Iterator[dg.Output]:
        model_registry = registry.get()
        champion = require_champion(model_registry)
        trained = VersionTags.of(champion)
        first, last = trained.train_first.isoformat(), trained.train_last.isoformat()
        reference = partition_store.get().read_range("features/daily_features", first, last)
        feature_names = list(model_registry.load(champion.version).feature_names)
        window = context.partition_time_window
        days = [
            window.start.date() + timedelta(days=n) for n in range((window.end - window.start).days)
        ]
        observed = sorted(set(recent.get_column("date").to_list()) & set(days))
        if not observed:
            context.log.info(
                f"no feature rows on {days[0]}..{days[-1]} (a weekend or holiday): nothing to "
                "check, so no report; the latest drift report stays the last day with data"
            )
            return
        report = daily_reports(
            reference,
            recent,
            feature_names,
            days,
            config,
            champion.version,
            multivariate_on=observed[-1] if observed else None,
        )
        latest = report.filter(pl.col("date") == report["date"].max()) if report.height else report
        drifted = latest.filter(pl.col("drifted") & (pl.col("feature") != MULTIVARIATE_FEATURE))
        mmd = latest.filter(pl.col("feature") == MULTIVARIATE_FEATURE)
        metadata = (
            frame_metadata(report, descriptions=REPORT_DESCRIPTIONS)
            | {
                "champion_version": champion.version,
                "reference_range": f"{first}...{last}",
                "latest_drifted_features": drifted.height,
                "latest_drifted": ", ".join(drifted["feature"].to_list()) or "none",
                "multivariate_drift": bool(mmd["drifted"][0]) if mmd.height else "not run",
                "latest_checks": markdown_table(
                    latest.sort("q_value")
                    .select("feature", "statistic", "q_value", "psi", "wasserstein", "drifted")
                    .with_columns(pl.col(pl.Float64).round_sig_figs(4)),
                    max_rows=30,
                ),
            }
            | _weekly_heatmap(report, model_registry, drifted.height)
        )
        yield versioned_output(report, metadata)

    return [drift_report]


def build_drift_sensor(settings: Settings) -> dg.SensorDefinition:
    persistence = settings.drift.persistence
    rounds = round_partitions(settings)

    @dg.sensor(
        name="drift_sensor",
        job_name=RETRAIN_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests a live retrain of the latest round (trained on everything labelled so far) "
        f"when feature drift persists for {persistence} consecutive checks; "
        "one retrain per drift episode (run key = champion version + episode start).",
    )
    def drift_sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        partition_store: PartitionStoreResource,
    ) -> dg.SensorResult | dg.SkipReason:
        champion = registry.get().alias(CHAMPION)
        if champion is None:
            return dg.SkipReason(
                "no champion model yet: drift is measured against the champion's training data"
            )
        checks = recent_checks(
            partition_store.get(), DRIFT_TABLE, champion.version, needed=max(persistence, 30)
        )
        if not checks:
            return dg.SkipReason(f"no drift report for champion version {champion.version} yet")
        latest = checks[-1][0].isoformat()
        cursor = f"{champion.version}:{latest}"
        if context.cursor == cursor:
            return dg.SkipReason(
                f"no new drift report since {latest} (champion {champion.version})"
            )
        episode = current_episode(checks, persistence)
        if episode is None:
            drifted = ", ".join(sorted(checks[-1][1])) or "none"
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"no drift persisting over {persistence} checks (latest {latest}: drifted {drifted})"
                ),
                cursor=cursor,
            )
        challenger = registry.get().alias(CHALLENGER)
        if challenger is not None and VersionTags.of(challenger).cutoff > checks[-1][0]:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"drift persists since {episode.start}, but challenger {challenger.version} "
                    f"already trained on everything labelled before {VersionTags.of(challenger).cutoff}: "
                    "a retrain would see the same data"
                ),
                cursor=cursor,
            )
        request = dg.RunRequest(
            run_key=f"drift:{champion.version}:{episode.start.isoformat()}",
            partition_key=rounds.get_last_partition_key(),
            tags={
                TRIGGER_TAG: "drift",
                DRIFTED_FEATURES_TAG: ",".join(episode.features),
                CUTOFF_TAG: LIVE_CUTOFF,
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return drift_sensor
