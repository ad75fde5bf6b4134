"""Feature and label assets: daily partitions reading a trailing (or, for labels, leading) window."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.metadata import frame_metadata, versioned_output
from pulse_assets.defs.raw import raw_key
from pulse_assets.defs.resources import PartitionStoreResource, table_name
from pulse_assets.features import build_daily_features, build_labels, feature_columns
from pulse_assets.features.pipeline import feature_descriptions
from pulse_assets.features.quality import duplicated_dates, non_finite_counts

FEATURES_KEY = dg.AssetKey(["features", "daily_features"])
LABELS_KEY = dg.AssetKey(["features", "daily_labels"])
FINITE_CHECK = "no_nan_or_inf"
UNIQUE_DATES_CHECK = "unique_dates"


def _feature_checks(frame: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    non_finite = non_finite_counts(frame)
    yield dg.AssetCheckResult(
        check_name=FINITE_CHECK,
        passed=not non_finite,
        metadata={"columns_with_non_finite_values": dg.MetadataValue.json(non_finite)},
        description=f"NaN/inf in {sorted(non_finite)}" if non_finite else "all values finite",
    )
    duplicated = duplicated_dates(frame)
    yield dg.AssetCheckResult(
        check_name=UNIQUE_DATES_CHECK,
        passed=not duplicated,
        metadata={"duplicated_dates": [str(day) for day in duplicated[:20]]},
    )


def build_feature_assets(
    settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    spec = settings.features
    described = feature_descriptions(spec)
    lookback = dg.TimeWindowPartitionMapping(start_offset=-spec.lookback_days(), end_offset=0)
    ins = {name: dg.AssetIn(key=raw_key(name), partition_mapping=lookback) for name in spec.inputs}

    @dg.asset(
        key=FEATURES_KEY,
        group_name="features",
        description=(
            f"Blended daily features on {spec.spine} days: fillna with staleness, indicators, "
            f"trailing normalization. Day t reads raw partitions t-{spec.lookback_days()}..t only "
            "(point in time), so one day alone equals the same day inside a range."
        ),
        ins=ins,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(FINITE_CHECK, asset=FEATURES_KEY, blocking=True),
            dg.AssetCheckSpec(UNIQUE_DATES_CHECK, asset=FEATURES_KEY, blocking=True),
        ],
        kinds={"polars", "parquet"},
        metadata={"lookback_rows": spec.lookback_rows(), "lookback_days": spec.lookback_days()},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=settings.freshness.features_fail_hours),
            warn_window=timedelta(hours=settings.freshness.features_warn_hours),
        ),
        automation_condition=dg.AutomationCondition.eager(),
    )
    def daily_features(
        context: dg.AssetExecutionContext, **raw_frames: pl.DataFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        window = context.partition_time_window
        table = build_daily_features(raw_frames, spec, window.start.date(), window.end.date())
        metadata = frame_metadata(table.frame, descriptions=described) | {
            "feature_columns": len(feature_columns(table.frame)),
            "warmup_rows_dropped": table.warmup_rows,
            "partitions": len(context.partition_keys),
        }
        yield versioned_output(table.frame, metadata)
        yield from _feature_checks(table.frame)

    spine_key = raw_key(spec.spine)
    label_sources = sorted({label.source for label in spec.labels} | {spec.spine})
    ahead = dg.TimeWindowPartitionMapping(
        start_offset=0,
        end_offset=spec.label_horizon_days,
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        key=LABELS_KEY,
        group_name="features",
        description=(
            "Forecast targets per spine day: the next spine day's value (reads up to "
            f"{spec.label_horizon_days} days ahead, so it is kept apart from the features). "
            "A label whose next day is not ingested yet is null."
        ),
        deps=[dg.AssetDep(raw_key(name), partition_mapping=ahead) for name in label_sources],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"polars", "parquet"},
        metadata={"labels": [label.name for label in spec.labels], "spine": str(spine_key)},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=settings.freshness.features_fail_hours),
            warn_window=timedelta(hours=settings.freshness.features_warn_hours),
        ),
        automation_condition=dg.AutomationCondition.eager(),
    )
    def daily_labels(
        context: dg.AssetExecutionContext, partition_store: PartitionStoreResource
    ) -> dg.Output[pl.DataFrame]:
        window = context.partition_time_window
        store = partition_store.get()
        days = spec.label_horizon_days + (window.end - window.start).days
        keys = [(window.start.date() + timedelta(days=n)).isoformat() for n in range(days)]
        frames = {
            name: store.read_prefix(table_name(raw_key(name)), keys) for name in label_sources
        }
        labels = build_labels(
            frames, spec.labels, spec.spine, window.start.date(), window.end.date()
        )
        metadata = frame_metadata(labels, descriptions=described) | {
            "labels_known": int(labels.drop_nulls().height),
        }
        return versioned_output(labels, metadata)

    return [daily_features, daily_labels]
