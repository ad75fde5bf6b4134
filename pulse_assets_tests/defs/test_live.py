"""Live operation in Dagster on a temporary instance: the ingestion schedules' ticks and the
freshness sensor's evaluations (as the daemon calls them), with the runs they request
executed for real against an HTTP source on a loopback server, the error_log in a real SQL
store and the webhook a real HTTP server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._utils.schedules import cron_string_iterator

from pulse_assets.config import ConfigError, Settings, load_settings
from pulse_assets.definitions import build_resources
from pulse_assets.defs.failures import build_failure_sensors
from pulse_assets.defs.freshness import (
    ATTEMPT_TAG,
    EPISODE_TAG,
    FRESHNESS_TRIGGER,
    build_freshness_sensor,
)
from pulse_assets.defs.live import (
    build_ingest_jobs,
    build_ingest_schedules,
    ingest_job_name,
    ingest_schedule_name,
)
from pulse_assets.defs.partitions import daily_partitions
from pulse_assets.defs.raw import build_raw_assets
from pulse_assets.defs.tags import RETRIED_BY_TAG, TRIGGER_TAG
from pulse_assets.reliability.failures import WEBHOOK_ENV, Action
from pulse_assets.reliability.freshness import SENSOR_NAME, FreshnessCursor
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.failure_sensors import FailureSensors
from pulse_assets_tests.http_server import Reply, Script, scripted_server
from pulse_assets_tests.live_config import day_payload, http_source, live_config

NY = ZoneInfo("America/New_York")
TODAY = datetime.now(UTC).date()
# partitions end (exclusive) yesterday: the latest day is the day before, due 24-48 h ago,
# the only one a 2-day lookback watches, and overdue past a 1 h window whatever the hour
END = TODAY - timedelta(days=1)
DAY = (TODAY - timedelta(days=2)).isoformat()
BACKOFF_S = 60
LIVE: dict[str, Any] = {
    "status": "running",
    "sensor_interval_s": 5,
    "lookback_days": 2,
    "max_attempts": 2,
    "backoff_s": BACKOFF_S,
    "backoff_factor": 2,
    "max_backoff_s": 600,
}
FRESHNESS = {"raw_warn_hours": 1, "raw_fail_hours": 2}


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    with scripted_server([Reply(200, {"ok": True})]) as (base, script):
        monkeypatch.setenv(WEBHOOK_ENV, base + "/hooks/live-test")
        yield script


@dataclass
class Live(FailureSensors):
    """The iris source's raw asset and job, the freshness and failure sensors, a clock the
    test moves forward instead of sleeping through backoffs."""

    settings: Settings
    instance: dg.DagsterInstance
    script: Script  # what the source's server received
    shift: timedelta = timedelta(0)
    cursor: str | None = None

    def __post_init__(self) -> None:
        jobs = build_ingest_jobs(self.settings)
        self.sensor = build_freshness_sensor(self.settings, jobs, clock=self.now)
        failure_sensors = build_failure_sensors(self.settings, jobs)
        resources = build_resources(self.settings)
        defs = dg.Definitions(
            assets=build_raw_assets(self.settings, daily_partitions(self.settings.partitions)),
            jobs=jobs,
            sensors=[self.sensor, *failure_sensors],
            resources=resources,
        )
        FailureSensors.__init__(
            self, self.instance, resources["sql_store"], defs.get_repository_def(), failure_sensors
        )

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def tick(self) -> SensorExecutionData:
        """One evaluation of the freshness sensor with the cursor the last one left."""
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"sql_store": self.sql_store},
            repository_def=self.repository,
        ) as context:
            data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        assert request.job_name is not None
        return self.repository.get_job(request.job_name).execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )

    def handle_failure(self, result: dg.ExecuteInProcessResult) -> list:
        """The failure sensor on a failed run, as the daemon calls it; the run's error_log rows."""
        return self.on_failed_run(result.dagster_run, result.get_run_failure_event())


@pytest.fixture
def make_live(
    tmp_path: Path, instance: dg.DagsterInstance
) -> Iterator[Callable[[list[Reply]], Live]]:
    """A Live over the iris source, its server answering ``replies`` in order."""
    with ExitStack() as stack:

        def build(replies: list[Reply]) -> Live:
            base, script = stack.enter_context(scripted_server(replies))
            raw = live_config(
                tmp_path, {"iris": http_source(base)}, END, live=LIVE, freshness=FRESHNESS
            )
            return Live(Settings.model_validate(raw), instance, script)

        yield build


def only_request(data: SensorExecutionData) -> dg.RunRequest:
    requests = list(data.run_requests or [])
    assert len(requests) == 1, (requests, data.skip_message)
    return requests[0]


def test_a_stale_source_is_re_ingested_with_backoff_and_given_up_after_max_attempts(
    make_live: Callable[[list[Reply]], Live], webhook: Script
) -> None:
    live = make_live([Reply(503, {"error": "down"})])
    first = only_request(live.tick())
    assert (first.job_name, first.partition_key) == (ingest_job_name("iris"), DAY)
    assert first.tags[TRIGGER_TAG] == FRESHNESS_TRIGGER
    assert first.tags[RETRIED_BY_TAG] == SENSOR_NAME and first.tags[ATTEMPT_TAG] == "1"
    assert first.run_key == f"{SENSOR_NAME}:{first.tags[EPISODE_TAG]}:1"
    run_1 = live.run(first)
    assert not run_1.success

    waiting = live.tick()
    assert not waiting.run_requests and "attempt 2 due at" in (waiting.skip_message or "")
    # The failure handler records the freshness run's failure and leaves it to the sensor.
    (decision,) = live.handle_failure(run_1)
    assert (decision.failure_class, decision.action) == (
        "network.unavailable",
        Action.RETRY_WITHHELD,
    )
    assert live.retries() == [], "the failure handler re-executed a freshness run"

    live.shift += timedelta(seconds=BACKOFF_S + 1)
    second = only_request(live.tick())
    assert second.tags[ATTEMPT_TAG] == "2"
    assert second.tags[EPISODE_TAG] == first.tags[EPISODE_TAG]
    run_2 = live.run(second)
    assert not run_2.success
    live.handle_failure(run_2)

    # the last attempt failed: no backoff to wait for, the sensor gives up at once
    gave_up = live.tick()
    assert not gave_up.run_requests
    assert "gave up on iris/" in (gave_up.skip_message or "")
    rows = live.log.for_root(run_1.run_id)
    assert [(r.action, r.run_id, r.attempt) for r in rows] == [
        (Action.RETRY_WITHHELD, run_1.run_id, 0),  # the failure handler's, on attempt 1
        (Action.RETRY_ABANDONED, run_2.run_id, 3),
        (Action.NOTIFIED, run_2.run_id, 3),
    ]
    assert (rows[1].failure_class, rows[1].source, rows[1].partition) == (
        "network.unavailable",
        "iris",
        DAY,
    )
    (alert,) = webhook.requests
    assert alert["body"]["source"] == "iris" and alert["body"]["partition"] == DAY

    live.shift += timedelta(hours=1)
    assert not live.tick().run_requests, "requested again after giving up"
    assert len(webhook.requests) == 1, "alerted twice for one outage"
    assert len(live.script.requests) == 2, "the source was asked more than once per attempt"


def test_a_success_materializes_the_day_and_resets_the_attempts(
    make_live: Callable[[list[Reply]], Live], webhook: Script
) -> None:
    live = make_live([Reply(503, {"error": "down"}), Reply(200, day_payload(DAY))])
    assert not live.run(only_request(live.tick())).success
    live.shift += timedelta(seconds=BACKOFF_S)
    assert live.run(only_request(live.tick())).success

    done = live.tick()
    assert not done.run_requests
    assert f"iris/{DAY} materialized: its attempts are reset" in (done.skip_message or "")
    assert FreshnessCursor.parse(live.cursor).episodes == {}
    frame = PartitionStore(live.settings.store.root or "").read("raw/iris", [DAY])
    assert frame.get_column("price").to_list() == [101.5]
    assert not live.tick().run_requests and webhook.requests == []


def test_a_day_inside_its_window_waits_and_a_bad_cursor_starts_over(
    make_live: Callable[[list[Reply]], Live],
) -> None:
    live = make_live([Reply(200, day_payload(DAY))])
    due = datetime.combine(END, datetime.min.time(), tzinfo=UTC)  # DAY ends, END begins
    live.shift = due + timedelta(minutes=30) - datetime.now(UTC)
    early = only_request(live.tick())
    before = (date.fromisoformat(DAY) - timedelta(days=1)).isoformat()
    assert early.partition_key == before, "DAY was requested inside its 1 h window"

    live.shift = timedelta(0)
    live.cursor = '{"version": 1, "episodes": {"iris/' + DAY + '": {"since": "yesterday"}}}'
    request = only_request(live.tick())
    assert request.tags[ATTEMPT_TAG] == "1"
    assert FreshnessCursor.parse(live.cursor).episodes[f"iris/{DAY}"].attempts == 1


# --- schedules -------------------------------------------------------------------------------


def schedule_settings(tmp_path: Path, status: str, end: date | None = None) -> Settings:
    cron = {"cron": "30 0 * * 2-6", "timezone": "America/New_York"}
    raw = live_config(
        tmp_path,
        {
            "iris": http_source("http://127.0.0.1:9", cron),
            "polls": http_source("http://127.0.0.1:9"),
        },
        end,
        live={"status": status},
    )
    raw["partitions"]["timezone"] = "America/New_York"
    return Settings.model_validate(raw)


def scheduled(settings: Settings) -> tuple[dg.ScheduleDefinition, dg.RepositoryDefinition]:
    """The iris schedule and a repository holding it with its job and raw assets."""
    jobs = build_ingest_jobs(settings)
    (schedule,) = build_ingest_schedules(settings, jobs)
    defs = dg.Definitions(
        assets=build_raw_assets(settings, daily_partitions(settings.partitions)),
        jobs=jobs,
        schedules=[schedule],
        resources=build_resources(settings),
    )
    return schedule, defs.get_repository_def()


def test_each_cron_tick_ingests_the_day_that_ended_last(tmp_path: Path) -> None:
    schedule, repository = scheduled(schedule_settings(tmp_path, "stopped"))
    assert schedule.name == ingest_schedule_name("iris")
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "30 0 * * 2-6",
        "America/New_York",
    )
    assert schedule.default_status is dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == ingest_job_name("iris")

    start = datetime(2024, 5, 5, tzinfo=NY).timestamp()  # a Sunday
    ticks = cron_string_iterator(start, str(schedule.cron_schedule), schedule.execution_timezone)
    keys = []
    for tick_at, _ in zip(ticks, range(6), strict=False):
        context = dg.build_schedule_context(
            scheduled_execution_time=tick_at, repository_def=repository
        )
        (request,) = schedule.evaluate_tick(context).run_requests or []
        assert (
            request.tags[TRIGGER_TAG] == "schedule"
            and request.run_key == f"iris:{request.partition_key}"
        )
        keys.append((tick_at.strftime("%a %H:%M"), request.partition_key))
    assert keys == [
        ("Tue 00:30", "2024-05-06"),
        ("Wed 00:30", "2024-05-07"),
        ("Thu 00:30", "2024-05-08"),
        ("Fri 00:30", "2024-05-09"),
        ("Sat 00:30", "2024-05-10"),
        ("Tue 00:30", "2024-05-13"),
    ]


def test_a_tick_past_the_partitions_skips_saying_why_and_production_runs_them(
    tmp_path: Path,
) -> None:
    settings = schedule_settings(tmp_path, "running", end=date(2024, 5, 8))
    jobs = build_ingest_jobs(settings)
    (schedule,) = build_ingest_schedules(settings, jobs)
    assert schedule.default_status is dg.DefaultScheduleStatus.RUNNING
    sensor = build_freshness_sensor(settings, jobs)
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
    late = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 5, 9, 0, 30, tzinfo=NY)
    )
    data = schedule.evaluate_tick(late)
    assert not data.run_requests
    assert "day 2024-05-08 is outside the partitions [2024-01-01, 2024-05-08)" in (
        data.skip_message or ""
    )


# --- settings --------------------------------------------------------------------------------


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "pulse.yaml"
    path.write_text(json.dumps(raw, default=str))
    return path


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 0 * * *", "'61 0 \\* \\* \\*' is not a cron expression Dagster runs"),
        ("30 0 * *", "is not a cron expression Dagster runs"),
        ("*/90 * * * *", "steps past its field's range"),
    ],
)
def test_a_bad_cron_is_an_error_at_load_naming_the_source(tmp_path: Path, cron, message) -> None:
    raw = live_config(tmp_path, {"iris": http_source("http://127.0.0.1:9", {"cron": cron})}, None)
    with pytest.raises(ConfigError, match=rf"sources\.iris\.schedule\.cron: .*{message}"):
        load_settings(write(tmp_path, raw))


def test_a_lookback_shorter_than_the_window_is_an_error(tmp_path: Path) -> None:
    raw = live_config(
        tmp_path,
        {"iris": http_source("http://127.0.0.1:9")},
        None,
        live={"lookback_days": 1},
        freshness={"raw_warn_hours": 30},
    )
    with pytest.raises(ConfigError, match=r"live.lookback_days \(1\) must reach further back"):
        load_settings(write(tmp_path, raw))


def test_schedules_and_the_sensor_are_stopped_locally_and_running_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PULSE_CONFIG", raising=False)
    monkeypatch.setenv("PULSE_PROFILE", "local")
    assert load_settings().live.status == "stopped"
    monkeypatch.setenv("PULSE_PROFILE", "production")
    for name in ("PULSE_STORE_ROOT", "PULSE_CHECKPOINTS_ROOT"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PULSE_MLFLOW_ARTIFACTS_URI", (tmp_path / "mlartifacts").as_uri())
    assert load_settings().live.status == "running"
