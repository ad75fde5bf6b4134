"""The multi-entity source as assets partitioned by day × entity, and the job over them.

``entities/<name>_raw`` holds one Parquet file per (day, entity) partition, read point in time
and validated like every raw source (a blocking quarantine check decides before anything is
stored). ``entities/<name>_features`` is a feature row per (day, entity) from the entity's
trailing days. A run covers a rectangle of days × entities, so the runs of a backfill split by
entity go to whichever workers are free (``execution.executor: celery``).
"""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import polars as pl

from pulse_assets.config import EntitiesConfig, QualityConfig
from pulse_assets.defs.metadata import frame_metadata, versioned_output
from pulse_assets.defs.raw import QUARANTINE_CHECK, quarantine_reasons, raw_descriptions
from pulse_assets.defs.resources import MULTI_KEY_SEPARATOR, PartitionStoreResource
from pulse_assets.entities import EntitySlice, entity_day_features
from pulse_assets.entities.features import FEATURE_DESCRIPTIONS
from pulse_assets.errors import QuarantineError
from pulse_assets.ingest import ingest_window, load_source
from pulse_assets.ingest.run import FINGERPRINT_COLUMN, PARTITION_COLUMN, WindowIngest
from pulse_assets.storage import PartitionStore

ENTITIES_JOB = "entities"
GROUP = "entities"
DATE, ENTITY = "date", "entity"


def raw_entity_key(config: EntitiesConfig) -> dg.AssetKey:
    return dg.AssetKey(["entities", f"{config.name}_raw"])


def entity_features_key(config: EntitiesConfig) -> dg.AssetKey:
    return dg.AssetKey(["entities", f"{config.name}_features"])


def quarantine_table(config: EntitiesConfig) -> str:
    """Quarantined rows, one file per (day, entity) partition, replaced with it."""
    return f"quarantine/entities/{config.name}"


def undated_table(config: EntitiesConfig) -> str:
    """Rows without a readable date, one file per entity (runs of different entities never
    write the same file), each row once under its fingerprint."""
    return f"quarantine_undated/entities/{config.name}"


def rejected_table(config: EntitiesConfig) -> str:
    return f"quarantine_rejected/entities/{config.name}"


def entity_partitions(config: EntitiesConfig) -> dg.MultiPartitionsDefinition:
    days = config.partitions
    return dg.MultiPartitionsDefinition(
        {
            DATE: dg.DailyPartitionsDefinition(
                start_date=days.start.isoformat(),
                end_date=days.end.isoformat() if days.end else None,
                timezone=days.timezone,
            ),
            ENTITY: dg.StaticPartitionsDefinition(list(config.entities)),
        }
    )


def cell_key(day: date, entity: str) -> str:
    """The multi-partition key of one day and entity, as Dagster writes it."""
    return f"{day.isoformat()}{MULTI_KEY_SEPARATOR}{entity}"


def run_cells(context: dg.AssetExecutionContext) -> tuple[list[date], list[str]]:
    """The days and entities of the run's partitions (a rectangle: every day × every entity)."""
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.MultiPartitionsDefinition)
    keys = [partitions_def.get_partition_key_from_str(str(k)) for k in context.partition_keys]
    days = sorted({date.fromisoformat(k.keys_by_dimension[DATE]) for k in keys})
    entities = sorted({k.keys_by_dimension[ENTITY] for k in keys})
    return days, entities


def _trailing_mapping(config: EntitiesConfig) -> dg.MultiPartitionMapping:
    """Day d of an entity reads that entity's raw days d - trailing_days .. d (days before the
    first partition do not exist and are not asked for)."""
    trailing = dg.TimeWindowPartitionMapping(
        start_offset=-config.trailing_days, allow_nonexistent_upstream_partitions=True
    )
    return dg.MultiPartitionMapping(
        {
            DATE: dg.DimensionPartitionMapping(DATE, trailing),
            ENTITY: dg.DimensionPartitionMapping(ENTITY, dg.IdentityPartitionMapping()),
        }
    )


def _with_cell_keys(frame: pl.DataFrame) -> pl.DataFrame:
    key = pl.concat_str(
        [pl.col(DATE).cast(pl.String), pl.col(ENTITY)], separator=MULTI_KEY_SEPARATOR
    )
    return frame.with_columns(key.alias(PARTITION_COLUMN))


def _known_undated(store: PartitionStore, table: str, entities: list[str]) -> pl.DataFrame:
    present = set(store.keys(table)) & set(entities)
    if not present:
        return pl.DataFrame(schema={ENTITY: pl.String, FINGERPRINT_COLUMN: pl.String})
    return store.read(table, present)


def _record_undated(
    store: PartitionStore, table: str, known: pl.DataFrame, new: pl.DataFrame
) -> None:
    """Append each entity's new undated rows to that entity's file."""
    for (entity,), rows in new.group_by(ENTITY):
        before = known.filter(pl.col(ENTITY) == entity)
        store.write(table, str(entity), pl.concat([before, rows], how="diagonal_relaxed"))


def _check_result(
    share: float, passed: bool, quarantined: int, limit: float
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"quarantined_share": share, "threshold": limit, "quarantined_rows": quarantined},
        description=f"{share:.2%} of rows quarantined (threshold {limit:.0%})",
    )


def _ingest(
    config: EntitiesConfig, days: list[date], entities: list[str]
) -> tuple[WindowIngest, str]:
    source = EntitySlice(
        load_source(config.name, config.source.plugin, config.source.params), entities
    )
    end = days[-1] + timedelta(days=1)
    return ingest_window(source, config.source.data_schema, days[0], end), source.location()


def build_raw_entity_asset(
    config: EntitiesConfig, quality: QualityConfig, partitions: dg.MultiPartitionsDefinition
) -> dg.AssetsDefinition:
    key = raw_entity_key(config)
    limit = quality.max_quarantine_share

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=config.source.description
        or f"Raw rows of {config.name} per day and entity ({config.source.plugin}).",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=key,
                blocking=True,
                description=f"Fails when more than {limit:.0%} of a run's rows were "
                "quarantined; the run then stores none of its rows.",
            )
        ],
        io_manager_key="io_manager",
        kinds={"polars", "parquet"},
        metadata={"plugin": config.source.plugin, "quarantine_table": quarantine_table(config)},
    )
    def raw_entities(
        context: dg.AssetExecutionContext, partition_store: PartitionStoreResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        days, entities = run_cells(context)
        ingest, location = _ingest(config, days, entities)
        store = partition_store.get()
        known = _known_undated(store, undated_table(config), entities)
        new_undated = ingest.new_undated(known.get_column(FINGERPRINT_COLUMN))
        verdict = ingest.verdict(new_undated.height, limit, 1.0)
        quarantined_rows = ingest.quarantined.height + new_undated.height
        if new_undated.height:  # counted by this run whatever its verdict, never again
            _record_undated(store, undated_table(config), known, new_undated)
        if not verdict.total_passed:
            rejected = pl.concat([ingest.quarantined, new_undated], how="diagonal_relaxed")
            store.write(rejected_table(config), context.run_id, rejected)
            yield _check_result(verdict.share, False, quarantined_rows, limit)
            raise QuarantineError(
                f"{key.to_user_string()}: {verdict.describe()}; no stored partition was "
                f"replaced. The {rejected.height} quarantined row(s) with their reasons are in "
                f"{rejected_table(config)}/{context.run_id} of the store; fix the source or "
                "its schema in configs/ (entities.source) and re-run these partitions"
            )
        metadata = frame_metadata(
            ingest.good, descriptions=raw_descriptions(config.name, config.source)
        ) | {
            "source": location,
            "days": len(days),
            "entities": len(entities),
            "quarantined_rows": quarantined_rows,
            "quarantined_share": verdict.share,
        }
        if quarantined_rows:
            metadata["quarantine_reasons"] = quarantine_reasons(ingest.quarantined, new_undated)
            context.log.warning(
                f"{quarantined_rows} row(s) of {config.name} quarantined; "
                f"see {quarantine_table(config)} in the store"
            )
        yield versioned_output(ingest.good, metadata)
        store.write_partitions(
            quarantine_table(config),
            _with_cell_keys(ingest.quarantined),
            [str(k) for k in context.partition_keys],
            key_column=PARTITION_COLUMN,
        )
        yield _check_result(verdict.share, True, quarantined_rows, limit)

    return raw_entities


def build_entity_features_asset(
    config: EntitiesConfig, partitions: dg.MultiPartitionsDefinition
) -> dg.AssetsDefinition:
    column = config.value_column

    @dg.asset(
        key=entity_features_key(config),
        group_name=GROUP,
        description=f"Per (day, entity): {column}, its trailing mean, standard deviation and "
        f"z-score over the entity's {config.trailing_days} days before, and its log change "
        "from the same weekday a week before. Point in time: day d reads days up to d only.",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            "raw": dg.AssetIn(raw_entity_key(config), partition_mapping=_trailing_mapping(config))
        },
        io_manager_key="io_manager",
        kinds={"polars", "parquet"},
    )
    def entity_features(
        context: dg.AssetExecutionContext, raw: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        days, entities = run_cells(context)
        frame = entity_day_features(raw, column, days, config.trailing_days)
        metadata = frame_metadata(frame, descriptions=FEATURE_DESCRIPTIONS) | {
            "days": len(days),
            "entities": len(entities),
            "raw_rows_read": raw.height,
        }
        return versioned_output(frame, metadata)

    return entity_features


def build_entity_assets(
    config: EntitiesConfig, quality: QualityConfig
) -> list[dg.AssetsDefinition]:
    if not config.enabled:
        return []
    partitions = entity_partitions(config)
    return [
        build_raw_entity_asset(config, quality, partitions),
        build_entity_features_asset(config, partitions),
    ]


def build_entity_jobs(config: EntitiesConfig) -> "list[dg.UnresolvedAssetJobDefinition]":
    if not config.enabled:
        return []
    job = dg.define_asset_job(
        ENTITIES_JOB,
        selection=dg.AssetSelection.groups(GROUP),
        partitions_def=entity_partitions(config),
        description="Raw rows and feature rows per day × entity. Launch one run per entity "
        "(or group of entities) over a range of days: the runs' steps spread over the workers.",
    )
    return [job]
