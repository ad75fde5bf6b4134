"""The training asset, its job and its schedule (the plan's daily Airflow DAG)."""

from datetime import date

import dagster as dg

from pulse_assets.config import Settings, checkpoints_root
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.resources import PartitionStoreResource, RegistryResource, SqlStoreResource
from pulse_assets.defs.tags import DRIFTED_FEATURES_TAG, TRIGGER_TAG
from pulse_assets.training.orchestrator import TrainingOutcome, run_training
from pulse_assets.training.registry import lineage_markdown

MODEL_KEY = dg.AssetKey(["models", "forecast_model"])
RETRAIN_JOB = "retrain"


def _metadata(outcome: TrainingOutcome, lineage: str) -> dict:
    result, label = outcome.result, next(iter(outcome.holdout))
    holdout, validation = outcome.holdout[label], outcome.validation[label]
    metadata = {
        "model_version": outcome.version,
        "champion_version": outcome.champion_version,
        "parent_version": outcome.parent_version or "none",
        "promoted": outcome.decision.promote,
        "promotion_reason": outcome.decision.reason,
        "training_range": outcome.window.partition_range(),
        "holdout_range": f"{outcome.window.holdout_start}...{outcome.window.holdout_end}",
        "training_id": outcome.training_id,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else -1,
        "device": result.device,
        "samples_per_second": result.samples_per_second,
        "loss_anomalies": dg.MetadataValue.json(result.anomalies),
        "nan_recoveries": dg.MetadataValue.json(result.recoveries),
        "lineage": dg.MetadataValue.md(lineage),
        "reads_from_previous_round": "the champion in the registry: parent of this version and the model to beat",
    }
    for name, value in holdout["model"].items():
        metadata[f"holdout_{name}"] = value
        metadata[f"holdout_naive_{name}"] = holdout["naive"][name]
    for name in ("rmse", "mae", "theil_u2"):
        metadata[f"validation_{name}"] = validation["model"][name]
    return metadata


def build_training_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    config = settings.training

    @dg.asset(
        key=MODEL_KEY,
        group_name="models",
        description=(
            f"Trains a {config.model.kind} forecaster of {config.labels} on the last "
            f"{config.window_days} days of features before a {config.holdout_days}-day holdout, logs it "
            "to MLflow, registers a version (alias challenger) and moves champion to it when it beats "
            "the current champion on the same holdout. Resumes from its checkpoints when re-executed."
        ),
        deps=[FEATURES_KEY, LABELS_KEY],
        kinds={"pytorch", "mlflow"},
        retry_policy=dg.RetryPolicy(max_retries=1),
    )
    def forecast_model(
        context: dg.AssetExecutionContext,
        partition_store: PartitionStoreResource,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> dg.MaterializeResult:
        tags = context.run.tags
        drifted = [f for f in tags.get(DRIFTED_FEATURES_TAG, "").split(",") if f]
        model_registry = registry.get()
        outcome = run_training(
            config=config,
            store=partition_store.get(),
            registry=model_registry,
            metrics=sql_store.metrics(),
            checkpoints_root=checkpoints_root(),
            trigger=tags.get(TRIGGER_TAG, "manual"),
            run_id=context.run.run_id,
            drifted_features=drifted,
            log=context.log.info,
        )
        lineage = lineage_markdown(model_registry.versions(), outcome.version)
        return dg.MaterializeResult(metadata=_metadata(outcome, lineage))

    return [forecast_model]


def build_training_jobs(settings: Settings) -> tuple[list, list]:
    job = dg.define_asset_job(
        RETRAIN_JOB,
        selection=[MODEL_KEY],
        description="Train, evaluate on the holdout, register, promote, store metrics.",
    )
    schedule = dg.ScheduleDefinition(
        name="retrain_schedule",
        job=job,
        cron_schedule=settings.training.schedule,
        execution_timezone=settings.partitions.timezone,
        tags={TRIGGER_TAG: "schedule"},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The plan's daily training DAG as a schedule (stopped until you start it).",
    )
    return [job], [schedule]


def trained_through(tags: dict[str, str]) -> date | None:
    """The last training day of a model version, from its partition_range tag."""
    span = tags.get("partition_range", "")
    return date.fromisoformat(span.split("...")[1]) if "..." in span else None
