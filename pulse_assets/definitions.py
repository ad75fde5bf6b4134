"""The code location: the only place that assembles ``dg.Definitions`` from ``defs/``."""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from pulse_assets.config import (
    Settings,
    artifacts_uri,
    load_settings,
    sql_url,
    store_root,
    tracking_uri,
)
from pulse_assets.defs.drift import build_drift_assets, build_drift_sensor
from pulse_assets.defs.entities import build_entity_assets, build_entity_jobs
from pulse_assets.defs.evaluation import build_evaluation_assets
from pulse_assets.defs.execution import build_executor
from pulse_assets.defs.failures import build_failure_sensors
from pulse_assets.defs.features import build_feature_assets
from pulse_assets.defs.freshness import build_freshness_sensor
from pulse_assets.defs.jobs import build_jobs
from pulse_assets.defs.live import build_ingest_jobs, build_ingest_schedules
from pulse_assets.defs.metrics import build_metrics_assets
from pulse_assets.defs.partitions import daily_partitions
from pulse_assets.defs.raw import build_raw_assets
from pulse_assets.defs.resources import (
    PartitionedParquetIOManager,
    PartitionStoreResource,
    RegistryResource,
    SqlStoreResource,
)
from pulse_assets.defs.rules import IMPACT_KEY, build_rule_assets
from pulse_assets.defs.run_health import build_dead_run_sensor
from pulse_assets.defs.training import build_training_assets, build_training_jobs

# BackfillPolicy, Output(data_version=...) and freshness are stable in use here but labelled beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(settings.partitions)
    return [
        *build_raw_assets(settings, partitions),
        *build_feature_assets(settings, partitions),
        *build_training_assets(settings),
        *build_evaluation_assets(settings),
        *build_drift_assets(settings, partitions),
        *build_rule_assets(settings),
        *build_metrics_assets(settings, IMPACT_KEY, settings.metrics),
        *build_entity_assets(settings.entities, settings.quality),
    ]


def build_resources(settings: Settings) -> dict[str, Any]:
    store = PartitionStoreResource(
        root=store_root(settings),
        s3=S3Resource(
            endpoint_url=settings.s3.endpoint_url,
            region_name=settings.s3.region,
            max_attempts=settings.s3.max_attempts,
        ),
    )
    sql = SqlStoreResource(url=sql_url(settings))
    tracking = settings.training.tracking
    registry = RegistryResource(
        tracking_uri=tracking_uri(settings),
        artifacts_uri=artifacts_uri(settings),
        model_name=tracking.model_name,
        experiment=tracking.experiment,
        retries=tracking.retries,
        timeout_s=tracking.timeout_s,
        sql=sql,
    )
    return {
        "partition_store": store,
        "io_manager": PartitionedParquetIOManager(store=store),
        "sql_store": sql,
        "registry": registry,
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    training_jobs, schedules = build_training_jobs(settings)
    automation = dg.AutomationConditionSensorDefinition(
        "pulse_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes features, labels, retrodiction and drift checks for the latest day "
        "when new raw partitions land (their AutomationCondition.eager()).",
    )
    ingest_jobs = build_ingest_jobs(settings)
    jobs = [*build_jobs(), *training_jobs, *build_entity_jobs(settings.entities), *ingest_jobs]
    return dg.Definitions(
        assets=build_assets(settings),
        jobs=jobs,
        schedules=[*schedules, *build_ingest_schedules(settings, ingest_jobs)],
        sensors=[
            build_drift_sensor(settings),
            automation,
            build_dead_run_sensor(),
            *build_failure_sensors(settings, jobs),
            build_freshness_sensor(settings, ingest_jobs),
        ],
        resources=build_resources(settings),
        executor=build_executor(settings.execution),
    )


defs = build_definitions(load_settings())
