"""The training rounds: models/forecast_model, partitioned by round, reading its previous round."""

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.config import Settings, checkpoints_root
from pulse_assets.curriculum.charts import curriculum_chart
from pulse_assets.curriculum.weights import Curriculum, round_curriculum, scenario_descriptions
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.metadata import embedded_charts, frame_metadata, rounded
from pulse_assets.defs.partitions import round_partitions, rounds_covering
from pulse_assets.defs.resources import READ_EXISTING_ONLY, RegistryResource
from pulse_assets.defs.tags import (
    CUTOFF_TAG,
    DRIFTED_FEATURES_TAG,
    LIVE_CUTOFF,
    TRIGGER_TAG,
    batch_size_from_tags,
)
from pulse_assets.progress import Countdown
from pulse_assets.storage.s3 import open_root
from pulse_assets.training.registry import ModelRegistry, lineage_markdown
from pulse_assets.training.rounds import (
    RECORD_DESCRIPTIONS,
    RoundContext,
    RoundError,
    RoundRecord,
    RoundWindow,
    earlier_records,
    live_cutoff,
    run_round,
)
from pulse_assets.training.service import ModelCache

MODEL_KEY = dg.AssetKey(["models", "forecast_model"])
CURRICULUM_KEY = dg.AssetKey(["curriculum", "curriculum"])
MODEL_OUTPUT, CURRICULUM_OUTPUT = (
    key.to_python_identifier() for key in (MODEL_KEY, CURRICULUM_KEY)
)
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

    earlier_rounds = dg.TimeWindowPartitionMapping(
        start_offset=-settings.curriculum.history_rounds,
        end_offset=-1,
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.multi_asset(
        name="models__forecast_model",
        outs={
            MODEL_OUTPUT: dg.AssetOut(
                key=MODEL_KEY,
                group_name="models",
                description=(
                    f"One training round ({rounds.cadence}) of the walk-forward. First the round's "
                    "champion: the previous round's challenger replaces the champion when it beat "
                    "it on the previous round's shadow days (both out of sample) by "
                    "promotion.min_improvement and a one-sided Diebold-Mariano test. Then the "
                    f"round's challenger: a {config.model.kind} trained on the last "
                    f"{config.window_days} days of rows whose label was known before the round's "
                    "cutoff, weighted by the round's curriculum, warm-started from the champion, "
                    "logged to MLflow and registered (once: the same data and config find the "
                    "existing version). Reads its previous rounds' records."
                ),
                kinds={"pytorch", "mlflow"},
                is_required=False,
            ),
            CURRICULUM_OUTPUT: dg.AssetOut(
                key=CURRICULUM_KEY,
                group_name="curriculum",
                description=(
                    "The round's retrodiction curriculum (the plan's "
                    "EnhancedRetrodictionCurriculum): the scenarios of its training window "
                    f"({settings.curriculum.period}s) with their regime, each scored against the "
                    "out-of-sample errors of the champions of the rounds before it (error "
                    "reduction, coverage expansion, edge-case exposure, novelty), and the row "
                    "weight the round's training used. Made in the training step: round R's "
                    "curriculum needs round R-1's champion, and Dagster has no cycles."
                ),
                kinds={"polars"},
                is_required=False,
            ),
        },
        ins={
            "features": dg.AssetIn(FEATURES_KEY, partition_mapping=history),
            "labels": dg.AssetIn(LABELS_KEY, partition_mapping=history),
            "previous": dg.AssetIn(
                MODEL_KEY, partition_mapping=earlier_rounds, metadata={READ_EXISTING_ONLY: True}
            ),
        },
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=dg.RetryPolicy(max_retries=1),
        can_subset=True,
    )
    def forecast_model(
        context: dg.AssetExecutionContext,
        features: pl.DataFrame,
        labels: pl.DataFrame,
        previous: pl.DataFrame,
        registry: RegistryResource,
    ) -> Iterator[dg.Output[pl.DataFrame]]:
        if MODEL_OUTPUT not in context.selected_output_names:
            raise RoundError(
                "curriculum/curriculum is made by the training rounds: select "
                "models/forecast_model with it (the retrain job does)"
            )
        model_registry = registry.get()
        cache = ModelCache(model_registry)
        windows = round_windows(partitions, list(context.partition_keys))
        history = earlier_records(previous, windows[0])
        record = history[-1] if history else None
        _check_first(windows, record, partitions.get_first_partition_key())
        live = context.run.tags.get(CUTOFF_TAG) == LIVE_CUTOFF
        round_context = _round_context(context, model_registry, cache)
        records, curricula = [], []
        countdown = Countdown("training rounds done:", len(windows))
        for window in windows:
            cutoff = live_cutoff(labels, window) if live and window == windows[-1] else window.start
            curriculum = round_curriculum(
                history,
                features,
                labels,
                cache.load,
                cutoff,
                round_context.training,
                settings.curriculum,
            )
            outcome = run_round(round_context, window, record, features, labels, cutoff, curriculum)
            record = outcome.record
            cache.add(record.challenger, outcome.challenger_module)
            history.append(record)
            records.append(record)
            curricula.append((window, curriculum))
            _observe(context, record, curriculum)
            context.log.info(f"round {window.key}: {record.summary()}; {countdown.advance()}")
        if _nothing_changed(context, records):
            context.log.info(
                "every round of this run found the version its data and config already made "
                f"({', '.join(f'{r.round}: {r.duplicate_of}' for r in records)}) and is already "
                "materialized: nothing registered, nothing downstream made stale"
            )
            return
        frame = pl.concat([r.to_frame() for r in records])
        metadata = frame_metadata(frame, descriptions=RECORD_DESCRIPTIONS)
        yield dg.Output(
            frame,
            output_name=MODEL_OUTPUT,
            metadata=metadata | _run_metadata(records, model_registry),
        )
        if CURRICULUM_OUTPUT in context.selected_output_names:
            yield _curriculum_output(curricula, settings, model_registry)

    def _round_context(
        context: dg.AssetExecutionContext, model_registry: ModelRegistry, cache: ModelCache
    ) -> RoundContext:
        tags = context.run.tags
        batch = batch_size_from_tags(tags, config.optimizer.batch_size)
        optimizer = config.optimizer.model_copy(update={"batch_size": batch})
        return RoundContext(
            training=config.model_copy(update={"optimizer": optimizer}),
            rounds=rounds,
            registry=model_registry,
            checkpoints_root=open_root(checkpoints_root(settings), settings.s3),
            load=cache.load,
            trigger=tags.get(TRIGGER_TAG, "manual"),
            run_id=context.run.run_id,
            drifted_features=tuple(f for f in tags.get(DRIFTED_FEATURES_TAG, "").split(",") if f),
            log=context.log.info,
            uniform_twin=settings.curriculum.uniform_twin,
        )

    return [forecast_model]


def _nothing_changed(context: dg.AssetExecutionContext, records: list[RoundRecord]) -> bool:
    """Every round found its existing version (same data, config and start) and its partition
    is materialized already: the records are what they were, so no new materialization."""
    if any(record.trained for record in records):
        return False
    materialized = context.instance.get_materialized_partitions(MODEL_KEY)
    return all(record.round in materialized for record in records)


def _observe(
    context: dg.AssetExecutionContext, record: RoundRecord, curriculum: Curriculum
) -> None:
    """Each round's own figures on its own partition (a range run's output metadata is shared
    by all its partitions, dagster-io/dagster#18123), so the UI plots them over rounds."""
    context.log_event(
        dg.AssetObservation(
            asset_key=MODEL_KEY,
            partition=record.round,
            metadata=rounded(round_metadata(record)),
        )
    )
    context.log_event(
        dg.AssetObservation(
            asset_key=CURRICULUM_KEY,
            partition=record.round,
            metadata=rounded(dict(curriculum.summary())),
        )
    )


def _curriculum_output(
    curricula: list[tuple[RoundWindow, Curriculum]], settings: Settings, registry: ModelRegistry
) -> dg.Output[pl.DataFrame]:
    """The run's rounds' scenarios, scores and weights; the latest scored round's chart."""
    frame = pl.concat(
        [
            curriculum.to_frame().with_columns(
                pl.lit(window.key).alias("round"), pl.lit(window.start).alias("date")
            )
            for window, curriculum in curricula
        ],
        how="diagonal_relaxed",
    )
    window, latest = curricula[-1]
    described = scenario_descriptions(settings.curriculum)
    metadata: dict[str, Any] = frame_metadata(frame, descriptions=described) | {
        "rounds_scored": sum(c.reason is None for _, c in curricula),
        "latest_round": window.key,
        "latest_reason": latest.reason or "scored",
    }
    if latest.scenarios.height:
        with tempfile.TemporaryDirectory(prefix="pulse-chart-") as folder:
            chart = curriculum_chart(
                latest, settings.curriculum.score_weights, Path(folder) / "curriculum.png"
            )
            registry.log_report(
                "curriculum", {"scenarios": float(latest.scenarios.height)}, [chart]
            )
            metadata |= embedded_charts([chart])
    return dg.Output(frame, output_name=CURRICULUM_OUTPUT, metadata=metadata)


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
        # the model's check reads retrodiction, which the evaluate job makes after training
        selection=dg.AssetSelection.assets(MODEL_KEY, CURRICULUM_KEY).without_checks(),
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
