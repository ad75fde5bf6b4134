"""One raw asset per configured source, daily partitioned, with blocking quarantine checks.

The checks decide before anything is stored: a run over the limit writes its quarantine apart
(``quarantine_rejected/<source>/<run id>``) and fails, leaving every stored partition as it was.
A run that passes writes its rows, then their quarantine.
"""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import polars as pl

from pulse_assets.config import QualityConfig, Settings, SourceConfig
from pulse_assets.defs.metadata import frame_metadata, markdown_table, versioned_output
from pulse_assets.defs.resources import PartitionStoreResource
from pulse_assets.errors import QuarantineError
from pulse_assets.ingest import ingest_window, load_source
from pulse_assets.ingest.run import FINGERPRINT_COLUMN, PARTITION_COLUMN, QuarantineVerdict
from pulse_assets.ingest.validation import REASON_COLUMN
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.partition_store import UNPARTITIONED_KEY

QUARANTINE_CHECK = "quarantine_share"
PARTITION_QUARANTINE_CHECK = "partition_quarantine_share"


def raw_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source_name])


def quarantine_table(source_name: str) -> str:
    return f"quarantine/{source_name}"


def undated_quarantine_table(source_name: str) -> str:
    """Rows without a readable date: one file, each row once, under its fingerprint."""
    return f"quarantine_undated/{source_name}"


def rejected_quarantine_table(source_name: str) -> str:
    """The quarantine of runs that failed the check, one file per run, apart from the stored one."""
    return f"quarantine_rejected/{source_name}"


def raw_descriptions(source_name: str, config: SourceConfig) -> dict[str, str]:
    """Each raw column as its schema declares it: type, allowed values, the source."""
    bounds = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    described = {}
    for column, spec in config.data_schema.columns.items():
        limits = [
            f"{sign} {getattr(spec, key):g}"
            for key, sign in bounds.items()
            if getattr(spec, key) is not None
        ]
        allowed = f" {', '.join(limits)}" if limits else ""
        described[column] = f"{spec.type}{allowed}, from {source_name} ({config.plugin})"
    return described


def _known_undated(store: PartitionStore, source_name: str) -> pl.DataFrame:
    table = undated_quarantine_table(source_name)
    if UNPARTITIONED_KEY not in store.keys(table):
        return pl.DataFrame(schema={FINGERPRINT_COLUMN: pl.String})
    return store.read(table, [UNPARTITIONED_KEY])


def _check_specs(key: dg.AssetKey, quality: QualityConfig) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            QUARANTINE_CHECK,
            asset=key,
            blocking=True,
            description=f"Fails when more than {quality.max_quarantine_share:.0%} of a run's "
            "rows were quarantined; the run then stores none of its rows.",
        ),
        dg.AssetCheckSpec(
            PARTITION_QUARANTINE_CHECK,
            asset=key,
            blocking=quality.block_on_partition_share,
            description=f"Fails when more than {quality.max_partition_quarantine_share:.0%} of "
            "one day's rows were quarantined"
            + (
                " (blocking: the run then stores none of its rows)."
                if quality.block_on_partition_share
                else "."
            ),
        ),
    ]


def _check_results(verdict: QuarantineVerdict, quarantined_rows: int) -> list[dg.AssetCheckResult]:
    over = verdict.partitions_over
    worst = verdict.partition_shares.head(1)
    return [
        dg.AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=verdict.total_passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "quarantined_share": verdict.share,
                "threshold": verdict.max_share,
                "quarantined_rows": quarantined_rows,
            },
            description=f"{verdict.share:.2%} of rows quarantined (threshold {verdict.max_share:.0%})",
        ),
        dg.AssetCheckResult(
            check_name=PARTITION_QUARANTINE_CHECK,
            passed=over.height == 0,
            severity=dg.AssetCheckSeverity.ERROR
            if verdict.blocks_on_partitions
            else dg.AssetCheckSeverity.WARN,
            metadata={
                "partitions_over_threshold": over.height,
                "threshold": verdict.max_partition_share,
                "worst_share": float(worst.item(0, "share")) if worst.height else 0.0,
                "partitions": markdown_table(over, max_rows=20),
            },
            description=f"{over.height} day(s) with more than "
            f"{verdict.max_partition_share:.0%} of their rows quarantined",
        ),
    ]


def build_raw_asset(
    name: str, config: SourceConfig, settings: Settings, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    key = raw_key(name)
    quality = settings.quality

    @dg.asset(
        key=key,
        group_name="raw",
        description=config.description or f"Raw rows of source {name} ({config.plugin}).",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=_check_specs(key, quality),
        io_manager_key="io_manager",
        kinds={"polars", "parquet"},
        metadata={"plugin": config.plugin, "quarantine_table": quarantine_table(name)},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=settings.freshness.raw_fail_hours),
            warn_window=timedelta(hours=settings.freshness.raw_warn_hours),
        ),
    )
    def raw_asset(
        context: dg.AssetExecutionContext, partition_store: PartitionStoreResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        source = load_source(name, config.plugin, config.params)
        window = context.partition_time_window
        ingest = ingest_window(source, config.data_schema, window.start.date(), window.end.date())
        store = partition_store.get()
        known_undated = _known_undated(store, name)
        new_undated = ingest.new_undated(known_undated.get_column(FINGERPRINT_COLUMN))
        verdict = ingest.verdict(
            new_undated.height,
            quality.max_quarantine_share,
            quality.max_partition_quarantine_share,
            blocks_on_partitions=quality.block_on_partition_share,
        )
        quarantined_rows = ingest.quarantined.height + new_undated.height
        if new_undated.height:
            # Undated rows belong to no partition: recording them replaces nothing stored, and
            # once recorded they never count again, whatever this run's verdict.
            recorded = pl.concat([known_undated, new_undated], how="diagonal_relaxed")
            store.write(undated_quarantine_table(name), UNPARTITIONED_KEY, recorded)
        if not verdict.passed:
            rejected = pl.concat([ingest.quarantined, new_undated], how="diagonal_relaxed")
            store.write(rejected_quarantine_table(name), context.run_id, rejected)
            yield from _check_results(verdict, quarantined_rows)
            raise QuarantineError(
                f"raw/{name}: {verdict.describe()}; no stored partition was replaced. "
                f"The {rejected.height} quarantined row(s) with their reasons are in "
                f"{rejected_quarantine_table(name)}/{context.run_id} of the store; fix the "
                "source or its schema in configs/ and re-run these partitions"
            )
        metadata = frame_metadata(ingest.good, descriptions=raw_descriptions(name, config)) | {
            "source": source.location(),
            "partitions": len(context.partition_keys),
            "quarantined_rows": quarantined_rows,
            "quarantined_share": verdict.share,
        }
        if quarantined_rows:
            metadata["quarantine_reasons"] = quarantine_reasons(ingest.quarantined, new_undated)
            context.log.warning(
                f"{quarantined_rows} row(s) of {name} quarantined; "
                f"see {quarantine_table(name)} in the store"
            )
        yield versioned_output(ingest.good, metadata)
        store.write_partitions(
            quarantine_table(name),
            ingest.quarantined,
            context.partition_keys,
            key_column=PARTITION_COLUMN,
        )
        yield from _check_results(verdict, quarantined_rows)

    return raw_asset


def quarantine_reasons(*quarantined: pl.DataFrame) -> dg.MetadataValue:
    """The reasons of quarantined rows, most frequent first, for a run's metadata."""
    reasons = pl.concat([frame.get_column(REASON_COLUMN) for frame in quarantined])
    return markdown_table(reasons.value_counts(sort=True), max_rows=10)


def build_raw_assets(
    settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    return [
        build_raw_asset(name, config, settings, partitions)
        for name, config in settings.sources.items()
    ]
