"""The code location: the only place that assembles ``dg.Definitions`` from ``defs/``."""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

from pulse_assets.config import Settings, load_settings, store_root
from pulse_assets.defs.features import build_feature_assets
from pulse_assets.defs.jobs import build_jobs
from pulse_assets.defs.partitions import daily_partitions
from pulse_assets.defs.raw import build_raw_assets
from pulse_assets.defs.resources import PartitionedParquetIOManager, PartitionStoreResource

# BackfillPolicy and Output(data_version=...) are stable in use here but still labelled beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(settings.partitions)
    return [*build_raw_assets(settings, partitions), *build_feature_assets(settings, partitions)]


def build_resources(settings: Settings) -> dict[str, Any]:
    store = PartitionStoreResource(root=store_root(settings))
    return {"partition_store": store, "io_manager": PartitionedParquetIOManager(store=store)}


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=build_assets(settings), jobs=build_jobs(), resources=build_resources(settings)
    )


defs = build_definitions(load_settings())
