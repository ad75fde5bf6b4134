"""The training rounds: models/forecast_model, partitioned by round, reading its previous round."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.config import Settings, checkpoints_root
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.metadata import rounded
from pulse_assets.defs.partitions import round_partitions, rounds_covering
from pulse_assets.defs.resources import READ_EXISTING_ONLY, RegistryResource
from pulse_assets.defs.tags import CUTOFF_TAG, DRIFTED_FEATURES_TAG, LIVE_CUTOFF, TRIGGER_TAG
from pulse_assets.training.registry import ModelRegistry, lineage_markdown
from pulse_assets.training.rounds import (
    RoundContext,
    RoundError,
    RoundRecord,
    RoundWindow,
    live_cutoff,
    previous_record,
    run_round,
)
from pulse_assets.training.service import ModelCache

MODEL_KEY = dg.AssetKey(["models", "forecast_model"])
RETRAIN_JOB = "retrain"


def round_windows(
    partitions: dg.TimeWindowPartitionsDefinition, keys: list[str]
) -> list[RoundWindow]:
    windows = [(key, partitions.time_window_for_partition_key(key)) for key in keys]
    return [RoundWindow(key, span.start.date(), span.end.date()) for key, span in windows]


def round_metadata(record: RoundRecord) -> dict[str, object]:
    """A round's own figures, numeric where the UI plots them across rounds."""
    figures: dict[str, object] = {
        "champion_version": int(record.champion),
        "challenger_version": int(record.challenger),
        "promoted": record.promoted,
        "decision": record.decision,
        "cutoff": record.cutoff.isoformat(),
        "shadow_days": record.shadow_days,
        "trained": record.trained,
        "duplicate_of": record.duplicate_of or "none",
        "training_range": f"{record.train_first}...{record.train_last}",
        "train_rows": record.train_rows,
        "epochs_run": record.epochs_run,
        "train_seconds": record.train_seconds,
        "warm_start_from": record.warm_start_from or "cold start",
    }
    for name in ("shadow_champion_rmse", "shadow_challenger_rmse", "dm_statistic", "dm_p_value"):
        value = getattr(record, name)
        if value is not None:
            figures[name] = float(value)
    return figures


def _check_first(
    windows: list[RoundWindow], previous: RoundRecord | None, first_key: str | None
) -> None:
    if previous is None and windows[0].key != first_key:
        raise RoundError(
            f"round {windows[0].key} reads the round before it, which is not materialized: "
            f"materialize the rounds from {first_key} on first (a backfill of rounds)"
        )


def build_training_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    config, rounds = settings.training, settings.rounds
    partitions = round_partitions(settings)
    history = dg.TimeWindowPartitionMapping(
        start_offset=-rounds_covering(config.window_days, settings),
        end_offset=0,
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        key=MODEL_KEY,
        group_name="models",
        description=(
            f"One training round ({rounds.cadence}) of the walk-forward. First the round's champion: "
            "the previous round's challenger replaces the champion when it beat it on the previous "
            "round's shadow days (both out of sample) by promotion.min_improvement and a one-sided "
            f"Diebold-Mariano test. Then the round's challenger: a {config.model.kind} trained on the "
            f"last {config.window_days} days of rows whose label was known before the round's "
            "cutoff, warm-started from the champion, logged to MLflow and registered (once: the same "
            "data and config find the existing version). Reads its previous round's record."
        ),
        ins={
            "features": dg.AssetIn(FEATURES_KEY, partition_mapping=history),
            "labels": dg.AssetIn(LABELS_KEY, partition_mapping=history),
            "previous": dg.AssetIn(
                MODEL_KEY,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
                metadata={READ_EXISTING_ONLY: True},
            ),
        },
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"pytorch", "mlflow"},
        retry_policy=dg.RetryPolicy(max_retries=1),
        output_required=False,
    )
    def forecast_model(
        context: dg.AssetExecutionContext,
        features: pl.DataFrame,
        labels: pl.DataFrame,
        previous: pl.DataFrame,
        registry: RegistryResource,
    ) -> Iterator[dg.Output[pl.DataFrame]]:
        tags = context.run.tags
        model_registry = registry.get()
        cache = ModelCache(model_registry)
        windows = round_windows(partitions, list(context.partition_keys))
        record = previous_record(previous, windows[0])
        _check_first(windows, record, partitions.get_first_partition_key())
        live = tags.get(CUTOFF_TAG) == LIVE_CUTOFF
        round_context = RoundContext(
            training=config,
            rounds=rounds,
            registry=model_registry,
            checkpoints_root=checkpoints_root(),
            load=cache.load,
            trigger=tags.get(TRIGGER_TAG, "manual"),
            run_id=context.run.run_id,
            drifted_features=tuple(f for f in tags.get(DRIFTED_FEATURES_TAG, "").split(",") if f),
            log=context.log.info,
        )
        records = []
        for window in windows:
            cutoff = live_cutoff(labels, window) if live and window == windows[-1] else window.start
            outcome = run_round(round_context, window, record, features, labels, cutoff)
            record = outcome.record
            cache.add(record.challenger, outcome.challenger_module)
            records.append(record)
            _observe(context, record)
        if _nothing_changed(context, records):
            context.log.info(
                "every round of this run found the version its data and config already made "
                f"({', '.join(f'{r.round}: {r.duplicate_of}' for r in records)}) and is already "
                "materialized: nothing registered, nothing downstream made stale"
            )
            return
        frame = pl.concat([r.to_frame() for r in records])
        yield dg.Output(frame, metadata=_run_metadata(records, model_registry))

    return [forecast_model]


def _nothing_changed(context: dg.AssetExecutionContext, records: list[RoundRecord]) -> bool:
    """Every round found its existing version (same data, config and start) and its partition
    is materialized already: the records are what they were, so no new materialization."""
    if any(record.trained for record in records):
        return False
    materialized = context.instance.get_materialized_partitions(MODEL_KEY)
    return all(record.round in materialized for record in records)


def _observe(context: dg.AssetExecutionContext, record: RoundRecord) -> None:
    """Each round's own figures on its own partition (a range run's output metadata is shared
    by all its partitions, dagster-io/dagster#18123), so the UI plots them over rounds."""
    context.log_event(
        dg.AssetObservation(
            asset_key=MODEL_KEY,
            partition=record.round,
            metadata=rounded(round_metadata(record)),
        )
    )


def _run_metadata(records: list[RoundRecord], registry: ModelRegistry) -> dict[str, Any]:
    last = records[-1]
    return {
        "rounds": len(records),
        "rounds_range": f"{records[0].round}...{last.round}",
        "promotions": sum(r.promoted for r in records),
        "new_versions": sum(r.trained for r in records),
        "latest_champion": last.champion,
        "latest_challenger": last.challenger,
        "lineage": dg.MetadataValue.md(lineage_markdown(registry.versions(), last.challenger)),
        "reads_from_previous_round": "its own previous partition: champion, challenger, cutoff",
    }


def build_training_jobs(settings: Settings) -> tuple[list, list]:
    job = dg.define_asset_job(
        RETRAIN_JOB,
        selection=[MODEL_KEY],
        partitions_def=round_partitions(settings),
        description="Training rounds: decide each round's champion, train its challenger.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name="round_schedule",
        tags={TRIGGER_TAG: "schedule"},
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    return [job], [schedule]
