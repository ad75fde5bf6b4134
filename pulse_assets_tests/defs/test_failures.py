"""The failure sensors against real failed runs on a temporary Dagster instance.

Each test materializes an asset that raises a real error, evaluates the run failure sensor
on that failed run (its evaluation function, as the daemon would call it, with the run's
real failure event), then the retry sensor, and runs what it requests, until the handler
stops. The error_log is a real SQL store (SQLite, and PostgreSQL on 127.0.0.1:5432), the
webhook a real HTTP server on 127.0.0.1.
"""

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import dagster as dg
import httpx
import pytest
import torch

from pulse_assets.config import Settings
from pulse_assets.defs.failures import (
    BATCH_SIZE_TAG,
    FAILURE_CLASS_TAG,
    FAILURE_SENSOR,
    QUARANTINED_SOURCE_TAG,
    RETRY_ATTEMPT_TAG,
    RETRY_OF_TAG,
    RETRY_ROOT_TAG,
    build_failure_sensors,
)
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.errors import SchemaError, SourceError
from pulse_assets.reliability.error_log import ErrorLog, ErrorLogEntry
from pulse_assets.reliability.failures import WEBHOOK_ENV, Action
from pulse_assets_tests.failure_sensors import FailureSensors
from pulse_assets_tests.http_server import Reply, Script, scripted_server
from pulse_assets_tests.postgres import fresh_database

SECRET = "sk-planted-sensor-31d9e0"
HOOK_PATH = "/hooks/T0001/planted-webhook-token"
DAYS = dg.DailyPartitionsDefinition("2020-01-01", end_date="2020-02-01")


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStoreResource]:
    if request.param == "sqlite":
        yield SqlStoreResource(url=f"sqlite:///{tmp_path / 'pulse.db'}")
        return
    with fresh_database("pulse_errors") as url:
        store = SqlStoreResource(url=url)
        yield store
        store.engine().dispose()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    monkeypatch.setenv("PULSE_TEST_API_KEY", SECRET)
    with scripted_server([Reply(200, {"ok": True})]) as (base, script):
        monkeypatch.setenv(WEBHOOK_ENV, base + HOOK_PATH)
        yield script


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(errors={"backoff_s": 0, "max_attempts": 2, "notify_min_severity": 4})


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


HARNESS_JOB = "harness_job"


class Harness(FailureSensors):
    """One asset, the two sensors, the instance and the store."""

    def __init__(
        self,
        asset: dg.AssetsDefinition,
        settings: Settings,
        instance: dg.DagsterInstance,
        sql_store: SqlStoreResource,
    ) -> None:
        self.asset = asset
        job = dg.define_asset_job(HARNESS_JOB, selection=[asset])
        sensors = build_failure_sensors(settings, [job])
        defs = dg.Definitions(
            assets=[asset], jobs=[job], sensors=sensors, resources={"sql_store": sql_store}
        )
        super().__init__(instance, sql_store, defs.get_repository_def(), sensors)

    def materialize(
        self,
        selection: Sequence[dg.AssetKey] | None = None,
        partition_key: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """A run of the harness job (the job the retry sensor re-runs failed assets in)."""
        return self.repository.get_job(HARNESS_JOB).execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            asset_selection=list(selection) if selection else None,
            partition_key=partition_key,
            tags=dict(tags or {}),
        )

    def on_failure(self, result: dg.ExecuteInProcessResult) -> list[ErrorLogEntry]:
        """Evaluate the run failure sensor on ``result``'s failed run; its new rows."""
        assert not result.success, "the asset was meant to fail"
        return self.on_failed_run(result.dagster_run, result.get_run_failure_event())

    def run_request(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return self.materialize(
            selection=request.asset_selection,
            partition_key=request.partition_key,
            tags=request.tags,
        )


def _everything(log: ErrorLog, root: str, script: Script) -> str:
    rows = " ".join(repr(row) for row in log.for_root(root))
    return rows + json.dumps([r["body"] for r in script.requests])


def test_retryable_failure_reexecutes_until_attempts_run_out(
    settings: Settings,
    instance: dg.DagsterInstance,
    sql_store: SqlStoreResource,
    webhook: Script,
) -> None:
    @dg.asset(key=["raw", "flaky"], partitions_def=DAYS)
    def flaky() -> None:
        try:
            httpx.get("http://127.0.0.1:9/series", timeout=2)  # nothing listens on port 9
        except httpx.TransportError as error:
            raise SourceError(
                "flaky", "http://127.0.0.1:9", f"down (token {SECRET})", "retry later"
            ) from error

    harness = Harness(flaky, settings, instance, sql_store)
    first = harness.materialize(partition_key="2020-01-02")
    root = first.run_id
    (row,) = harness.on_failure(first)
    assert (row.failure_class, row.action, row.attempt) == (
        "network.unavailable",
        Action.RETRY_SCHEDULED,
        1,
    )
    assert (row.source, row.partition, row.exception_type) == (
        "flaky",
        "2020-01-02",
        "httpx.ConnectError",
    )
    assert instance.get_run_by_id(root).tags[FAILURE_CLASS_TAG] == "network.unavailable"
    assert harness.on_failure(first) == [row], "a second evaluation of one failure acted again"

    parent = first
    for attempt in (1, 2):
        (request,) = harness.retries()
        assert request.asset_selection == [dg.AssetKey(["raw", "flaky"])]
        assert request.partition_key == "2020-01-02"
        assert request.tags[RETRY_ROOT_TAG] == root
        assert request.tags[RETRY_ATTEMPT_TAG] == str(attempt)
        assert request.tags[RETRY_OF_TAG] == parent.run_id
        assert harness.retries() == [], "a requested re-execution was requested again"
        parent = harness.run_request(request)
        rows = harness.on_failure(parent)
        assert webhook.requests == [] or attempt == 2, "alerted before the attempts ran out"

    (last,) = [r for r in rows if r.action in (Action.RETRIES_EXHAUSTED,)]
    assert (last.attempt, last.severity) == (2, 4)
    assert harness.retries() == [], "re-executed after max_attempts"
    assert len(webhook.requests) == 1, f"expected one alert, got {len(webhook.requests)}"
    body = webhook.requests[0]["body"]
    assert (body["action"], body["root_run_id"], body["run_id"]) == (
        "retries_exhausted",
        root,
        parent.run_id,
    )
    assert [r.action for r in harness.log.for_root(root)] == [
        Action.RETRY_SCHEDULED,
        Action.RETRY_REQUESTED,
        Action.RETRY_SCHEDULED,
        Action.RETRY_REQUESTED,
        Action.RETRIES_EXHAUSTED,
        Action.NOTIFIED,
    ]
    everything = _everything(harness.log, root, webhook)
    assert SECRET not in everything, "the planted secret reached the error_log or the webhook"
    assert "planted-webhook-token" not in everything


def test_schema_mismatch_quarantines_and_does_not_retry(
    settings: Settings,
    instance: dg.DagsterInstance,
    sql_store: SqlStoreResource,
    webhook: Script,
) -> None:
    @dg.asset(key=["raw", "polls"], partitions_def=DAYS)
    def polls() -> None:
        raise SchemaError(f"data lacks the required column 'margin' (key {SECRET})")

    harness = Harness(polls, settings, instance, sql_store)
    result = harness.materialize(partition_key="2020-01-03")
    (row, alert) = harness.on_failure(result)
    assert (row.failure_class, row.strategy, row.action, row.severity) == (
        "data.schema_mismatch",
        "quarantine_source",
        Action.SOURCE_QUARANTINED,
        4,
    )
    assert alert.action is Action.NOTIFIED
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[QUARANTINED_SOURCE_TAG] == "polls"
    assert harness.retries() == [], "a schema mismatch must not be re-executed"
    assert len(webhook.requests) == 1
    assert SECRET not in _everything(harness.log, result.run_id, webhook)


def test_gpu_out_of_memory_halves_the_batch(
    settings: Settings, instance: dg.DagsterInstance, sql_store: SqlStoreResource
) -> None:
    seen: list[str | None] = []

    @dg.asset(
        key=["models", "forecast_like"],
        partitions_def=DAYS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def forecast_like(context: dg.AssetExecutionContext) -> None:
        seen.append(context.run.tags.get(BATCH_SIZE_TAG))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    harness = Harness(forecast_like, settings, instance, sql_store)
    span = {
        "dagster/asset_partition_range_start": "2020-01-02",
        "dagster/asset_partition_range_end": "2020-01-05",
    }
    result = harness.materialize(tags=span)
    (row,) = harness.on_failure(result)
    base = settings.training.optimizer.batch_size
    assert (row.failure_class, row.action, row.batch_size) == (
        "model.gpu_out_of_memory",
        Action.RETRY_SCHEDULED,
        base // 2,
    )
    assert row.partition == "2020-01-02...2020-01-05"
    (request,) = harness.retries()
    assert request.tags[BATCH_SIZE_TAG] == str(base // 2)
    assert {k: request.tags[k] for k in span} == span, "the retry lost the partition range"
    second = harness.run_request(request)
    (row,) = harness.on_failure(second)
    assert row.batch_size == base // 4 and row.attempt == 2
    assert seen == [None, str(base // 2)], "the halved batch size did not reach the asset"


def test_run_failed_outside_any_step(
    settings: Settings,
    instance: dg.DagsterInstance,
    sql_store: SqlStoreResource,
    webhook: Script,
) -> None:
    """A run the dead_run_sensor marks failed has no exception at all: unknown, recorded,
    alerted (unknown is severity 4), not re-executed."""

    @dg.asset
    def steady() -> int:
        return 1

    harness = Harness(steady, settings, instance, sql_store)
    job = dg.Definitions(
        assets=[steady], jobs=[dg.define_asset_job("steady_job", selection=[steady])]
    ).resolve_job_def("steady_job")
    run = instance.create_run_for_job(job)
    instance.report_run_failed(run, "the process that ran this run (pid 4242) is gone")
    (record,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert record.dagster_event is not None
    (row, alert) = harness.on_failed_run(instance.get_run_by_id(run.run_id), record.dagster_event)
    assert (row.step_key, row.failure_class, row.action, row.severity) == (
        None,
        "unknown",
        Action.RECORDED,
        4,
    )
    assert "pid 4242" in row.message
    assert alert.action is Action.NOTIFIED and len(webhook.requests) == 1
    assert harness.retries() == []


def test_sensors_load_with_the_project_definitions(settings: Settings) -> None:
    from pulse_assets.definitions import build_definitions

    repository = build_definitions(settings).get_repository_def()
    assert {FAILURE_SENSOR, "failure_retry_sensor"} <= {s.name for s in repository.sensor_defs}


def test_a_failed_ad_hoc_materialization_is_recorded_and_not_re_executed(
    settings: Settings,
    instance: dg.DagsterInstance,
    sql_store: SqlStoreResource,
    webhook: Script,
) -> None:
    """A run outside the project's jobs (dg.materialize, a UI selection) cannot be re-run by
    the retry sensor: the retry is abandoned with the reason, never requested."""

    @dg.asset(key=["raw", "ad_hoc"], partitions_def=DAYS)
    def ad_hoc() -> None:
        raise SourceError("ad_hoc", "http://127.0.0.1:9", "down", "retry later")

    harness = Harness(ad_hoc, settings, instance, sql_store)
    failed = dg.materialize(
        [ad_hoc], instance=instance, partition_key="2020-01-02", raise_on_error=False
    )
    (row,) = harness.on_failure(failed)
    assert row.action is Action.RETRY_SCHEDULED
    assert harness.retries() == [], "a run of an ad-hoc job was re-executed"
    abandoned = [
        r for r in harness.log.for_root(failed.run_id) if r.action is Action.RETRY_ABANDONED
    ]
    assert len(abandoned) == 1 and "not one of the project's jobs" in abandoned[0].message
