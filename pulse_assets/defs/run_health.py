"""Runs whose process was killed stay STARTED in Dagster for ever: this sensor fails them.

Dagster's run monitoring (``run_monitoring`` in dagster.yaml) can only see a dead run worker
through the run launcher's ``check_run_worker_health``, and the DefaultRunLauncher of this
project does not offer it (``supports_check_run_worker_health`` is False in dagster 1.13), so
monitoring covers start and cancel timeouts and ``max_runtime_seconds`` only. Runs executed
in a Python process (``dg.materialize``, ``execute_job``, the CLI) have no launcher at all.

The process that runs a run emits its RUN_START event, whose ``pid`` Dagster records. A
STARTED run whose process no longer exists (or whose pid now belongs to a process started
after the run, or to a zombie) cannot finish: it is marked FAILURE, which also lets the UI
and ``ReexecutionOptions.from_failure`` re-execute it (the training asset then resumes from
its checkpoints through its training id).

Pids are only meaningful on the host that ran the process: this fits the project's local
deployment (daemon, code server and runs on one machine). Runs on other hosts (a container
run launcher) are watched by their launcher's own health check instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from pulse_assets.reliability.processes import process_gone

DEAD_RUN_SENSOR = "dead_run_sensor"


@dataclass(frozen=True)
class RunProcess:
    run_id: str
    pid: int
    started_at: float


def started_runs(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Every STARTED run with the pid and time of its RUN_START event."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    )
    found = []
    for record in records:
        run_id = record.dagster_run.run_id
        starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
        event = starts[-1].dagster_event if starts else None
        if event is not None and event.pid is not None:
            found.append(RunProcess(run_id, event.pid, starts[-1].timestamp))
    return found


def fail_dead_runs(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Mark FAILURE every STARTED run whose process is gone; returns those runs."""
    failed = []
    for process in started_runs(instance):
        if not process_gone(process.pid, process.started_at):
            continue
        run = instance.get_run_by_id(process.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(
            run,
            f"the process that ran this run (pid {process.pid}) is gone: it was killed or "
            "crashed without reporting an end. Marked failed by the dead_run_sensor; "
            "re-execute it from failure (a training resumes from its checkpoints)",
        )
        failed.append(process)
    return failed


def build_dead_run_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=DEAD_RUN_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks FAILURE the runs left STARTED by a killed process (a pid that no longer "
            "exists on this host), so they can be re-executed from failure."
        ),
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        failed = fail_dead_runs(context.instance)
        if not failed:
            return dg.SkipReason("every STARTED run still has its process")
        listed = ", ".join(f"{p.run_id} (pid {p.pid})" for p in failed)
        context.log.warning(f"marked failed, their process is gone: {listed}")
        return dg.SkipReason(f"marked {len(failed)} run(s) failed: {listed}")

    return dead_run_sensor
