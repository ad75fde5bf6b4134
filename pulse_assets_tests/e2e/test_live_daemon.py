"""End to end: a real ``dagster-daemon`` over a temporary DAGSTER_HOME runs the freshness sensor
against two HTTP sources on loopback servers. ``iris`` answers 503 once and then serves the
day: the sensor's first run fails, the second (after the backoff) materializes the day.
``iris_down`` never answers: after ``max_attempts`` runs the sensor stops, with one error_log
row and one webhook alert, and asks for nothing more. The failure handler (running in the
same daemon) never re-executes the sensor's runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType, TickStatus

from pulse_assets.config import REPO_ROOT
from pulse_assets.defs.failures import RETRY_ROOT_TAG
from pulse_assets.defs.freshness import ATTEMPT_TAG, EPISODE_TAG, FRESHNESS_TRIGGER
from pulse_assets.defs.raw import raw_key
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.reliability.error_log import ErrorLog
from pulse_assets.reliability.failures import DECISIONS, WEBHOOK_ENV, Action
from pulse_assets.reliability.freshness import SENSOR_NAME
from pulse_assets.storage.sql import connect
from pulse_assets_tests.http_server import Reply, Script, scripted_server
from pulse_assets_tests.live_config import day_payload, http_source, live_config
from pulse_assets_tests.processes import stop_group

pytestmark = pytest.mark.e2e
TODAY = datetime.now(UTC).date()
END = TODAY - timedelta(days=1)  # the latest partition, due 24-48 h ago: overdue at once
DAY = (TODAY - timedelta(days=2)).isoformat()
BACKOFF_S = 3
LIVE = {
    "status": "running",
    "sensor_interval_s": 5,  # the sensor daemon loops every 5 s at best
    "lookback_days": 2,
    "max_attempts": 2,
    "backoff_s": BACKOFF_S,
    "backoff_factor": 2,
    "max_backoff_s": 30,
}
T = TypeVar("T")
DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, log: Path) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout_s} s waiting for {what}; the daemon's log ends:\n"
        f"{log.read_text()[-4000:]}"
    )


@dataclass
class Daemon:
    instance: dg.DagsterInstance
    log: ErrorLog
    output: Path
    recovering: Script
    down: Script
    webhook: Script

    def freshness_runs(self, source: str) -> list[dg.DagsterRun]:
        """The freshness sensor's runs of ``raw/<source>``, oldest first."""
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(
                tags={TRIGGER_TAG: FRESHNESS_TRIGGER}, job_name=f"ingest_{source}"
            )
        )
        return sorted(runs, key=lambda run: int(run.tags[ATTEMPT_TAG]))


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    recovering = scripted_server(
        [Reply(503, {"error": "warming up"}), Reply(200, day_payload(DAY))]
    )
    down = scripted_server([Reply(503, {"error": "down"})])
    hook = scripted_server([Reply(200, {"ok": True})])
    with recovering as (url_a, script_a), down as (url_b, script_b), hook as (url_h, script_h):
        raw = live_config(
            tmp_path,
            {"iris": http_source(url_a), "iris_down": http_source(url_b)},
            END,
            live=LIVE,
            freshness={"raw_warn_hours": 1, "raw_fail_hours": 2},
        )
        if "execution" in raw:  # steps in the run's own process: one import less per run
            raw["execution"] = raw["execution"] | {"executor": "in_process"}
        config_file = tmp_path / "pulse.yaml"
        config_file.write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
        dagster_home = tmp_path / "dagster"
        dagster_home.mkdir()
        instance_yaml = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
        instance_yaml["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
        (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
        env = os.environ | {
            "DAGSTER_HOME": str(dagster_home),
            "PULSE_HOME": str(tmp_path),
            "PULSE_CONFIG": str(config_file),
            WEBHOOK_ENV: f"{url_h}/hooks/live-e2e",
        }
        output = tmp_path / "daemon.log"
        # the instance's SQLite storages are created here, before the daemon opens them: two
        # processes creating them at once race on alembic_version ("table already exists")
        with (
            dg.DagsterInstance.from_config(str(dagster_home)) as instance,
            output.open("w") as sink,
        ):
            engine = connect(raw["sql"]["url"])
            process = subprocess.Popen(
                [DAEMON, "run", "-m", "pulse_assets.definitions"],
                cwd=REPO_ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                yield Daemon(instance, ErrorLog(engine), output, script_a, script_b, script_h)
            finally:
                engine.dispose()
                stop_group(process)


def _materialized(daemon: Daemon) -> set[str]:
    records = daemon.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=raw_key("iris"), asset_partitions=[DAY]), limit=5
    ).records
    return {record.partition_key for record in records if record.partition_key}


def _ticks_after(daemon: Daemon, moment: datetime) -> list[InstigatorTick]:
    """The freshness sensor's completed ticks that started after ``moment``."""
    (state,) = [
        s
        for s in daemon.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.name == SENSOR_NAME
    ]
    ticks = daemon.instance.get_ticks(
        state.instigator_origin_id, state.selector_id, after=moment.timestamp()
    )
    return [tick for tick in ticks if tick.status is not TickStatus.STARTED]


def _gave_up(daemon: Daemon) -> list[Any]:
    runs = daemon.freshness_runs("iris_down")
    if not runs:
        return []
    rows = daemon.log.for_root(runs[0].run_id)
    return rows if any(row.action is Action.NOTIFIED for row in rows) else []


def test_the_freshness_sensor_retries_recovers_and_gives_up_once(daemon: Daemon) -> None:
    wait_until(
        lambda: _materialized(daemon), 150, f"raw/iris {DAY} to be materialized", daemon.output
    )
    rows = wait_until(lambda: _gave_up(daemon), 60, "the give-up of iris_down", daemon.output)

    recovered = daemon.freshness_runs("iris")
    assert [run.status for run in recovered] == [
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.SUCCESS,
    ], "iris: attempt 1 fails on the 503, attempt 2 materializes the day"
    assert {run.tags["dagster/partition"] for run in recovered} == {DAY}
    assert len({run.tags[EPISODE_TAG] for run in recovered}) == 1
    first, second = (daemon.instance.get_run_record_by_id(run.run_id) for run in recovered)
    assert first and second and first.end_time and second.create_timestamp
    waited = second.create_timestamp.timestamp() - first.end_time
    assert waited >= BACKOFF_S, f"attempt 2 was requested {waited:.1f} s after attempt 1 ended"
    assert len(daemon.recovering.requests) == 2

    abandoned = [row for row in rows if row.action is Action.RETRY_ABANDONED]
    (row,) = abandoned
    failed = daemon.freshness_runs("iris_down")
    assert [run.status for run in failed] == [dg.DagsterRunStatus.FAILURE] * 2
    assert (row.source, row.partition, row.failure_class) == (
        "iris_down",
        DAY,
        "network.unavailable",
    )
    assert (row.root_run_id, row.run_id, row.attempt) == (failed[0].run_id, failed[1].run_id, 3)
    (alert,) = daemon.webhook.requests
    assert alert["body"]["source"] == "iris_down" and alert["body"]["partition"] == DAY

    assert row.created_at is not None
    after = wait_until(
        lambda: _ticks_after(daemon, row.created_at), 30, "a tick after the give-up", daemon.output
    )
    assert not any(tick.run_ids for tick in after), "the sensor asked again after giving up"
    assert len(daemon.freshness_runs("iris_down")) == 2, "the sensor asked again after giving up"
    assert len(daemon.down.requests) == 2 and len(daemon.webhook.requests) == 1
    # The failure handler may have seen these runs (every 30 s): it never re-executes them.
    retried = daemon.instance.get_runs(
        filters=dg.RunsFilter(tags={RETRY_ROOT_TAG: failed[0].run_id})
    )
    assert retried == []
    for run in [*failed, recovered[0]]:
        decided = [r.action for r in daemon.log.for_run(run.run_id) if r.action in DECISIONS]
        assert decided in ([], [Action.RETRY_WITHHELD]), (run.run_id, decided)
