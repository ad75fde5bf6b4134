"""Retrodiction: each day of history forecast by the champion, next to what happened."""

import time
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.metadata import frame_metadata, versioned_output
from pulse_assets.defs.resources import RegistryResource, SqlStoreResource
from pulse_assets.defs.training import MODEL_KEY, trained_through
from pulse_assets.errors import PulseError
from pulse_assets.evaluation.retrodiction import retrodict, window_metrics
from pulse_assets.features.pipeline import feature_columns
from pulse_assets.rules.loop import active_rules
from pulse_assets.training.registry import CHAMPION, ModelRegistry, ModelVersionInfo

RETRODICTION_KEY = dg.AssetKey(["evaluation", "retrodiction"])


class NoChampionError(PulseError):
    """An asset needs the champion model and the registry has none yet."""


def require_champion(registry: ModelRegistry) -> ModelVersionInfo:
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise NoChampionError(
            f"no version of {registry.model_name} has the alias champion yet: materialize "
            "models/forecast_model first (make demo trains one)"
        )
    return champion


def history_days(settings: Settings) -> int:
    """Calendar days of feature history a recurrent model's window of rows needs."""
    model = settings.training.model
    rows = model.lookback_rows if model.kind != "mlp" else 1
    return int(rows * 1.5) + 10


def build_evaluation_assets(
    settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    labels = settings.training.labels

    @dg.asset(
        key=RETRODICTION_KEY,
        group_name="evaluation",
        description=(
            "For each day t, the champion's forecast from features known at t, the actual (the next "
            "trading day's label), the error, the naive persistence forecast, and the forecast adjusted "
            "by the active rules. Reads the champion from the registry (the model the latest training "
            "round promoted) and the active rules from the rule repository (what the latest rule round "
            "promoted)."
        ),
        ins={
            "features": dg.AssetIn(
                FEATURES_KEY,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-history_days(settings), end_offset=0
                ),
            ),
            "label_rows": dg.AssetIn(
                LABELS_KEY,
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-10, end_offset=0),
            ),
        },
        deps=[MODEL_KEY],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"pytorch", "parquet"},
    )
    def retrodiction(
        context: dg.AssetExecutionContext,
        features: pl.DataFrame,
        label_rows: pl.DataFrame,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> Iterator[dg.Output]:
        started = time.perf_counter()
        model_registry = registry.get()
        champion = require_champion(model_registry)
        module = model_registry.load(champion.version)
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        feature_names = list(module.feature_names)
        rules = active_rules(sql_store.rules(), labels, feature_columns(features))
        frame = retrodict(
            module,
            features,
            label_rows,
            feature_names,
            labels,
            start,
            end,
            champion.version,
            trained_through(champion.tags),
            [rule for _, rule in rules],
        )
        metadata = frame_metadata(frame) | {
            "model_version": champion.version,
            "in_sample_rows": int(frame["in_sample"].sum()),
        }
        metadata["active_rules"] = ", ".join(record.rule_id for record, _ in rules) or "none"
        metrics_store = sql_store.metrics()
        for scope, prefix, key in (
            ("retrodiction", "forecast", ""),
            ("retrodiction_with_rules", "adjusted", "_adjusted"),
        ):
            for label, figures in window_metrics(frame, labels, prefix).items():
                for name in ("rmse", "mae", "theil_u2", "mbe"):
                    metadata[f"{label}{key}_{name}"] = figures["model"][name]
                    metadata[f"{label}_naive_{name}"] = figures["naive"][name]
                metrics_store.record(
                    model_name=model_registry.model_name,
                    model_version=champion.version,
                    scope=scope,
                    window=(start, end - timedelta(days=1)),
                    label=label,
                    metrics=figures,
                    rows=frame.drop_nulls(f"actual_{label}").height,
                    run_id=context.run.run_id,
                )
        metadata["compute_seconds"] = time.perf_counter() - started
        yield versioned_output(frame, metadata)

    return [retrodiction]
