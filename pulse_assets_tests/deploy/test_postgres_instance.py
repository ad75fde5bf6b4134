"""The production profile end to end on the real PostgreSQL: Dagster's run, event-log and
schedule storage, the Pulse SQL store, the daemon's sensor ticks, `dagster definitions
validate`, and a planted password that shows nowhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType

from pulse_assets.cli import prepare_dagster_home
from pulse_assets.config import REPO_ROOT, Settings, load_settings, sql_url
from pulse_assets.definitions import build_assets, build_resources
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.raw import raw_key
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.errors import StoreError
from pulse_assets.storage.sql import connect
from pulse_assets_tests.conftest import small_config
from pulse_assets_tests.deploy.conftest import PLANTED_PASSWORD
from pulse_assets_tests.ports import free_port

BIN = Path(sys.executable).parent
RAW_KEYS = [raw_key(name) for name in ("market_prices", "political_polls", "social_activity")]
RAW_FIRST, RAW_LAST = "2016-02-01", "2016-04-29"  # features need ~70 days of history
FEATURE_FIRST, FEATURE_LAST = "2016-04-25", "2016-04-29"
LOAD_ERROR = "Error loading repository location"  # the daemon could not load the code


def production_instance(home: Path) -> dg.DagsterInstance:
    """The instance of ``$DAGSTER_HOME`` after prepare_dagster_home copied the profile's yaml."""
    return dg.DagsterInstance.from_config(str(prepare_dagster_home(home)))


def small_production_settings(tmp_path: Path) -> Settings:
    """The production profile's stores (read from the environment) with the tests' small
    windows, so a few days of features need only weeks of raw history."""
    profile = load_settings()
    raw = small_config(tmp_path, store=profile.store.model_dump(), sql=profile.sql.model_dump())
    return Settings.model_validate(raw)


def test_a_range_materialization_lands_in_postgres(
    production_pg: Path, pg_engine: sa.Engine, tmp_path: Path
) -> None:
    settings = small_production_settings(tmp_path)
    with production_instance(production_pg) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = {}
        for keys, first, last in (
            (RAW_KEYS, RAW_FIRST, RAW_LAST),
            ([FEATURES_KEY, LABELS_KEY], FEATURE_FIRST, FEATURE_LAST),
        ):
            result = dg.materialize(
                build_assets(settings),
                selection=keys,
                resources=build_resources(settings),
                instance=instance,
                tags=range_tags(first, last),
            )
            assert result.success
            runs[keys[0]] = result.run_id
        days = instance.get_materialized_partitions(FEATURES_KEY)
        assert days == {f"2016-04-{day}" for day in range(25, 30)}
        assert len(instance.get_materialized_partitions(raw_key("market_prices"))) == 89

    with pg_engine.connect() as connection:
        count = connection.execute(
            sa.text(
                "SELECT count(*) FROM event_logs WHERE run_id = :run "
                "AND dagster_event_type = 'ASSET_MATERIALIZATION'"
            ),
            {"run": runs[RAW_KEYS[0]]},
        ).scalar_one()
        assert count == 89 * 3, "one materialization per raw asset and day, in PostgreSQL"
        statuses = connection.execute(
            sa.text("SELECT status FROM runs WHERE run_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": list(runs.values())},
        ).scalars()
        assert sorted(statuses) == ["SUCCESS", "SUCCESS"]
    assert not list((production_pg / "dagster").rglob("*.db")), "no SQLite storage was made"

    # the Pulse SQL store of the profile ("postgresql+psycopg://": libpq's variables) shares
    # the database with Dagster's tables without a clash
    SqlStoreResource(url=sql_url(settings)).metrics()
    tables = set(sa.inspect(pg_engine).get_table_names())
    assert {"event_logs", "runs", "job_ticks"} <= tables
    assert {"model_metrics", "alias_events", "rules"} <= tables


def plant_dead_run(home: Path) -> str:
    """A run whose process was killed mid-step (SIGKILL), left STARTED in PostgreSQL."""
    code = (
        "import os, signal, dagster as dg\n"
        "@dg.asset\n"
        "def doomed():\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "dg.materialize([doomed], instance=dg.DagsterInstance.get())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        (run,) = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        return run.run_id


def sensor_ticks(instance: dg.DagsterInstance) -> dict[str, list[InstigatorTick]]:
    return {
        state.instigator_name: list(
            instance.get_ticks(state.instigator_origin_id, state.selector_id)
        )
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    }


def test_the_daemon_records_sensor_ticks_in_postgres(production_pg: Path, tmp_path: Path) -> None:
    """`dagster-daemon run` on the production instance evaluates the project's sensors: the
    drift sensor skips (no champion yet) and the dead-run sensor fails the killed run; both
    ticks are in PostgreSQL's schedule storage."""
    prepare_dagster_home(production_pg)
    dead = plant_dead_run(production_pg)
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(str(production_pg / "dagster")) as instance:
            ticks = wait_for_ticks(
                instance, {"drift_sensor", "dead_run_sensor"}, daemon, tmp_path / "daemon.log"
            )
            run = instance.get_run_by_id(dead)
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()
    drift = ticks["drift_sensor"][-1]
    assert "no champion model yet" in (drift.skip_reason or ""), drift
    reasons = " ".join(t.skip_reason or "" for t in ticks["dead_run_sensor"])
    assert f"marked 1 run(s) failed: {dead}" in reasons, reasons
    assert PLANTED_PASSWORD not in (tmp_path / "daemon.log").read_text()


def wait_for_ticks(
    instance: dg.DagsterInstance,
    names: set[str],
    daemon: subprocess.Popen,
    log: Path,
    limit_s: float = 240,
) -> dict[str, list[InstigatorTick]]:
    """The sensors' ticks once each of ``names`` has one that is not still STARTED."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and daemon.poll() is None:
        if LOAD_ERROR in log.read_text():
            pytest.fail(f"the daemon could not load the code location:\n{log.read_text()[-4000:]}")
        ticks = sensor_ticks(instance)
        done = {
            name for name in names if any(t.status.value != "STARTED" for t in ticks.get(name, []))
        }
        if done == names:
            return ticks
        time.sleep(2)
    state = "exited" if daemon.poll() is not None else f"ran {limit_s:.0f} s"
    pytest.fail(
        f"dagster-daemon {state} without a finished tick of each of {sorted(names)} "
        f"(ticks: {sensor_ticks(instance)}); the end of its log, {log}:\n" + log.read_text()[-3000:]
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_dagster_validates_the_production_profile(
    production_pg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_dagster_home(production_pg)
    done = run_cli("dagster", "definitions", "validate", "-w", "workspace.yaml")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Validation successful" in output
    assert PLANTED_PASSWORD not in output

    monkeypatch.delenv("PULSE_STORE_ROOT")
    done = run_cli("dagster", "definitions", "validate", "-w", "workspace.yaml")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "PULSE_STORE_ROOT" in output, output[-4000:]
    assert PLANTED_PASSWORD not in output


def test_the_planted_password_shows_in_no_output_or_error(
    production_pg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    prepare_dagster_home(production_pg)
    info = run_cli("dagster", "instance", "info")
    assert info.returncode == 0, info.stderr[-3000:]
    assert "PostgresEventLogStorage" in info.stdout and "PostgresScheduleStorage" in info.stdout
    assert PLANTED_PASSWORD not in info.stdout + info.stderr

    monkeypatch.setenv("PGPORT", str(free_port()))  # PostgreSQL "goes away"
    with pytest.raises(Exception) as dagster_error:  # noqa: B017 - whatever Dagster raises
        with production_instance(production_pg) as instance:
            instance.get_runs(limit=1)
    settings = small_production_settings(tmp_path)
    with pytest.raises(StoreError) as store_error:
        connect(sql_url(settings))  # not the resource's engine, cached per URL in this process
    for error in (dagster_error.value, store_error.value):
        chain: BaseException | None = error
        while chain is not None:
            assert PLANTED_PASSWORD not in f"{chain!s} {chain!r}", type(chain).__name__
            chain = chain.__cause__ or chain.__context__
    assert "refused" in str(store_error.value) or "failed" in str(store_error.value)
    assert PLANTED_PASSWORD not in caplog.text
