"""The failure handler's two sensors evaluated as the daemon evaluates them, on a temporary
instance: what the failure-handling and the live-operation tests both drive."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from pulse_assets.defs.failures import FAILURE_SENSOR
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.reliability.error_log import ErrorLog, ErrorLogEntry


class FailureSensors:
    """The run failure sensor and the retry sensor of ``repository`` on ``instance``."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        sql_store: SqlStoreResource,
        repository: dg.RepositoryDefinition,
        sensors: Sequence[dg.SensorDefinition],  # build_failure_sensors': failure, retry
    ) -> None:
        self.instance, self.sql_store, self.repository = instance, sql_store, repository
        self.failure_sensor, self.retry_sensor = sensors
        self.log = ErrorLog(sql_store.engine())

    def on_failed_run(self, run: dg.DagsterRun, event: dg.DagsterEvent) -> list[ErrorLogEntry]:
        """Evaluate the run failure sensor on a failed run; the run's error_log rows."""
        context = dg.build_run_status_sensor_context(
            sensor_name=FAILURE_SENSOR,
            dagster_instance=self.instance,
            dagster_run=run,
            dagster_event=event,
            resources={"sql_store": self.sql_store},
            repository_def=self.repository,
        ).for_run_failure()
        self.failure_sensor(context)
        return self.log.for_run(run.run_id)

    def retries(self) -> list[dg.RunRequest]:
        """One tick of the retry sensor, its run requests resolved against the repository."""
        with dg.build_sensor_context(
            instance=self.instance,
            resources={"sql_store": self.sql_store},
            repository_def=self.repository,
        ) as context:
            return list(self.retry_sensor.evaluate_tick(context).run_requests or [])
