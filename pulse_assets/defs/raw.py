"""One raw asset per configured source, daily partitioned, with a blocking quarantine check."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from pulse_assets.config import Settings, SourceConfig
from pulse_assets.defs.metadata import frame_metadata, markdown_table, versioned_output
from pulse_assets.defs.resources import PartitionStoreResource
from pulse_assets.ingest import ingest_window, load_source
from pulse_assets.ingest.run import PARTITION_COLUMN

QUARANTINE_CHECK = "quarantine_share"


def raw_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source_name])


def quarantine_table(source_name: str) -> str:
    return f"quarantine/{source_name}"


def build_raw_asset(
    name: str, config: SourceConfig, settings: Settings, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    key = raw_key(name)
    max_share = settings.quality.max_quarantine_share
    check = dg.AssetCheckSpec(
        QUARANTINE_CHECK,
        asset=key,
        blocking=True,
        description=f"Fails, and stops downstream assets, when more than {max_share:.0%} "
        "of the fetched rows were quarantined.",
    )

    @dg.asset(
        key=key,
        group_name="raw",
        description=config.description or f"Raw rows of source {name} ({config.plugin}).",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[check],
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
        result = ingest_window(source, config.data_schema, window.start.date(), window.end.date())
        partition_store.get().write_partitions(
            quarantine_table(name),
            result.quarantined,
            context.partition_keys,
            key_column=PARTITION_COLUMN,
        )
        share = result.quarantined_share
        metadata = frame_metadata(result.good) | {
            "source": source.location(),
            "partitions": len(context.partition_keys),
            "quarantined_rows": result.quarantined.height,
            "quarantined_share": share,
        }
        if result.quarantined.height:
            reasons = result.quarantined.get_column("quarantine_reason").value_counts(sort=True)
            metadata["quarantine_reasons"] = markdown_table(reasons, max_rows=10)
            context.log.warning(
                f"{result.quarantined.height} row(s) of {name} quarantined; "
                f"see {quarantine_table(name)} in the store"
            )
        yield versioned_output(result.good, metadata)
        yield dg.AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=share <= max_share,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "quarantined_share": share,
                "threshold": max_share,
                "quarantined_rows": result.quarantined.height,
            },
            description=f"{share:.2%} of rows quarantined (threshold {max_share:.0%})",
        )

    return raw_asset


def build_raw_assets(
    settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    return [
        build_raw_asset(name, config, settings, partitions)
        for name, config in settings.sources.items()
    ]
