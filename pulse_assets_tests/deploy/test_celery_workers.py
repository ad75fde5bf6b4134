"""Celery workers on the real RabbitMQ broker at 127.0.0.1:5672 (guest/guest).

A Celery worker process started here (``celery -A pulse_assets.defs.celery_worker worker``,
its own queue so that parallel test sessions do not share one) takes the steps of a
retrodiction range (the ``evaluate`` job, three monthly rounds) and of the ``rules`` job over
the same rounds, launched as an operator would (``dagster job execute`` on the code location,
``execution.executor: celery``) on an instance in a DAGSTER_HOME on disk. Their stored outputs
equal an in-process run's; every step ran in a process of the worker; the broker URL with its
password is in no run config, event or log. The worker is stopped and its queue deleted after.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster._serdes import serialize_value
from polars.testing import assert_frame_equal

from pulse_assets.config import (
    REPO_ROOT,
    CeleryConfig,
    ExecutionConfig,
    Settings,
    load_settings,
    store_root,
)
from pulse_assets.definitions import build_assets, build_resources
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.execution import broker_config, broker_url, build_executor
from pulse_assets.defs.jobs import EVALUATE_JOB, RULES_JOB
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.rules import IMPACT_KEY, STATE_KEY
from pulse_assets.defs.training import CURRICULUM_KEY, MODEL_KEY
from pulse_assets.errors import ConfigError
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.celery_processes import delete_queue, descendants, stop_worker
from pulse_assets_tests.conftest import isolated_world

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BROKER_ENV = "PULSE_CELERY_BROKER"
ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01"]
SMALL_MLP = {"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0}
WORKER_START_S = 120
RUN_TIMEOUT_S = 300
BIN = Path(sys.executable).parent


# --- settings, without a broker -----------------------------------------------------------


def test_the_executor_follows_the_setting_and_default_stays_dagsters(monkeypatch) -> None:
    monkeypatch.delenv(BROKER_ENV, raising=False)
    assert build_executor(ExecutionConfig()) is None
    assert build_executor(ExecutionConfig(executor="in_process")) is dg.in_process_executor
    assert build_executor(ExecutionConfig(executor="multiprocess")) is dg.multiprocess_executor
    celery = build_executor(ExecutionConfig(executor="celery"))
    assert celery is not None and celery.name == "celery"


def test_the_broker_url_is_read_from_the_environment_not_put_in_dagsters_config(
    monkeypatch,
) -> None:
    monkeypatch.delenv(BROKER_ENV, raising=False)
    assert broker_config(CeleryConfig()) == "amqp://127.0.0.1:5672//"
    assert broker_config(CeleryConfig(require_broker_env=True)) == {"env": BROKER_ENV}
    with pytest.raises(ConfigError, match=r"read from \$PULSE_CELERY_BROKER, which is not set"):
        broker_url(CeleryConfig(require_broker_env=True))
    monkeypatch.setenv(BROKER_ENV, BROKER)
    assert broker_config(CeleryConfig()) == {"env": BROKER_ENV}
    assert broker_url(CeleryConfig()) == BROKER


def test_a_broker_url_with_a_password_in_the_settings_is_refused(tmp_path) -> None:
    path = tmp_path / "pulse.yaml"
    path.write_text(
        f"extends: {REPO_ROOT / 'configs' / 'pulse.yaml'}\n"
        "execution: {executor: celery, celery: {broker: 'amqp://pulse:s3cr3t-pw@mq:5672//'}}\n"
    )
    with pytest.raises(ConfigError, match=r"execution\.celery\.broker: the URL holds a password"):
        load_settings(path)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "s3cr3t-pw" not in str(error.value)


def test_the_production_profile_runs_steps_on_celery_with_the_broker_from_the_environment(
    production_env: Path, monkeypatch
) -> None:
    monkeypatch.delenv(BROKER_ENV, raising=False)
    celery = load_settings().execution
    assert celery.executor == "celery" and celery.celery.require_broker_env
    assert broker_config(celery.celery) == {"env": BROKER_ENV}


# --- a real worker ------------------------------------------------------------------------


def broker_reachable() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as error:
        pytest.fail(
            f"RabbitMQ on 127.0.0.1:5672 is required for this test and is not reachable "
            f"({error}); start it (guest/guest) and run the test again"
        )


def write_config(settings: Settings, path: Path, execution: dict[str, Any]) -> Path:
    raw = settings.model_dump(mode="json", by_alias=True) | {"execution": execution}
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_ready(worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(
                f"the Celery worker exited ({worker.returncode}):\n{log.read_text()[-3000:]}"
            )
        if " ready." in log.read_text():
            return
        time.sleep(0.5)
    pytest.fail(
        f"the Celery worker was not ready in {WORKER_START_S} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def cluster(trained_world, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Three rounds trained in process on an instance in DAGSTER_HOME, and a Celery worker
    (concurrency 1) on its own queue, with the settings' copy the worker and the runs read."""
    broker_reachable()
    tmp = tmp_path_factory.mktemp("celery")
    settings = isolated_world(trained_world, tmp, model=SMALL_MLP)
    queue = f"pulse-test-{uuid.uuid4().hex[:10]}"
    config = write_config(
        settings, tmp / "celery.yaml", {"executor": "celery", "celery": {"queue": queue}}
    )
    dagster_home = tmp / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {
        "PULSE_CONFIG": str(config),
        "PULSE_HOME": str(tmp / "pulse_home"),
        "DAGSTER_HOME": str(dagster_home),
        BROKER_ENV: BROKER,
    }
    env.pop("PULSE_PROFILE", None)
    log = tmp / "worker.log"
    command = [str(BIN / "celery"), "-A", "pulse_assets.defs.celery_worker", "worker"]
    command += ["--concurrency", "1", "-n", f"{queue}@%h", "-I", "pulse_assets.definitions"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]
    with log.open("wb") as out:
        worker = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PULSE_HOME", env["PULSE_HOME"])
            instance = dg.DagsterInstance.from_config(str(dagster_home))
            trained = dg.materialize(
                build_assets(settings),
                selection=[MODEL_KEY, CURRICULUM_KEY],
                resources=build_resources(settings),
                instance=instance,
                tags=range_tags(ROUNDS[0], ROUNDS[-1]),
            )
            assert trained.success
            wait_ready(worker, log)
            yield {
                "settings": settings,
                "instance": instance,
                "env": env,
                "log": log,
                "worker": worker,
                "queue": queue,
            }
    finally:
        stop_worker(worker)
        delete_queue(BROKER, queue)


def stored(settings: Settings, table: str) -> pl.DataFrame:
    return PartitionStore(store_root(settings)).read(table, ROUNDS)


def in_process(cluster: dict[str, Any], keys: list[dg.AssetKey]) -> None:
    result = dg.materialize(
        build_assets(cluster["settings"]),
        selection=keys,
        resources=build_resources(cluster["settings"]),
        instance=cluster["instance"],
        tags=range_tags(ROUNDS[0], ROUNDS[-1]),
    )
    assert result.success


def on_celery(cluster: dict[str, Any], job: str) -> tuple[dg.DagsterRun, int, str]:
    """``dagster job execute`` of ``job`` over the rounds, as an operator runs it: the run,
    the pid of the process that ran it, and what it printed."""
    arm = uuid.uuid4().hex
    tags = range_tags(ROUNDS[0], ROUNDS[-1]) | {"pulse/test_arm": arm}
    command = [str(BIN / "dagster"), "job", "execute", "-m", "pulse_assets.definitions"]
    command += ["-a", "defs", "-j", job, "--tags", json.dumps(tags)]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=cluster["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 0, (
        f"`dagster job execute -j {job}` on Celery failed ({process.returncode}):\n"
        f"{output[-4000:]}\nworker log:\n{cluster['log'].read_text()[-3000:]}"
    )
    runs = cluster["instance"].get_runs(filters=dg.RunsFilter(tags={"pulse/test_arm": arm}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    return runs[0], process.pid, output


def assert_steps_ran_on_the_worker(cluster: dict[str, Any], run: dg.DagsterRun, cli: int) -> None:
    records = cluster["instance"].all_logs(run.run_id)
    starts = [
        r for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_START"
    ]
    assert starts, f"run {run.run_id} started no step"
    workers = descendants(cluster["worker"].pid)
    for record in starts:
        pid = record.dagster_event.pid if record.dagster_event else None
        assert pid in workers and pid not in (cli, os.getpid()), (
            f"step {record.step_key} ran in process {pid}, not in the worker's {sorted(workers)}"
        )
    handed = [
        r.dagster_event.event_specific_data.metadata["Celery worker"].value
        for r in records
        if r.dagster_event and "in celery worker" in (r.dagster_event.message or "")
    ]
    assert len(handed) == len(starts)
    assert all(name.startswith(f"{cluster['queue']}@") for name in handed), handed


def assert_no_broker_password(cluster: dict[str, Any], run: dg.DagsterRun, output: str) -> None:
    secret = BROKER.split("://", 1)[1].split("@", 1)[0]  # "guest:guest"
    records = cluster["instance"].all_logs(run.run_id)
    places = {
        "run config": json.dumps(run.run_config),
        "run tags": json.dumps(run.tags),
        "events": "\n".join(serialize_value(r) for r in records),
        "dagster job execute output": output,
        "worker log": cluster["log"].read_text(),
    }
    leaked = [where for where, text in places.items() if secret + "@" in text]
    assert not leaked, f"the broker URL with its password shows in: {leaked}"


def test_a_retrodiction_range_on_the_worker_equals_the_in_process_run(cluster) -> None:
    settings = cluster["settings"]
    in_process(cluster, [RETRODICTION_KEY])
    expected = stored(settings, "evaluation/retrodiction")
    run, cli, output = on_celery(cluster, EVALUATE_JOB)
    assert expected.height > 40 and expected.get_column("round").n_unique() == len(ROUNDS)
    assert_frame_equal(stored(settings, "evaluation/retrodiction"), expected)
    assert_steps_ran_on_the_worker(cluster, run, cli)
    assert_no_broker_password(cluster, run, output)


def test_the_rules_job_on_the_worker_equals_the_in_process_run(cluster) -> None:
    settings = cluster["settings"]
    if not PartitionStore(store_root(settings)).keys("evaluation/retrodiction"):
        in_process(cluster, [RETRODICTION_KEY])  # the rules read the rounds' retrodiction
    in_process(cluster, [STATE_KEY, IMPACT_KEY])
    expected = {t: stored(settings, t) for t in ("rules/rule_state", "rules/rule_impact")}
    run, cli, output = on_celery(cluster, RULES_JOB)
    for table, frame in expected.items():
        assert_frame_equal(stored(settings, table), frame, check_row_order=False)
    assert expected["rules/rule_impact"].height > 40
    assert_steps_ran_on_the_worker(cluster, run, cli)
    assert_no_broker_password(cluster, run, output)
