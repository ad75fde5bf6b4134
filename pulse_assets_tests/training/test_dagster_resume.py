"""The claimed path: a Dagster training run killed mid-epoch is marked failed (not left
STARTED), re-executed from failure, finds its checkpoints through the training id and ends
with the weights of an uninterrupted training."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch

from pulse_assets.config import Settings
from pulse_assets.definitions import build_definitions, build_resources
from pulse_assets.defs.run_health import DEAD_RUN_SENSOR
from pulse_assets.defs.training import MODEL_KEY
from pulse_assets.reliability.processes import linux_process, process_gone
from pulse_assets.training.registry import VersionTags
from pulse_assets.training.rounds import round_data
from pulse_assets_tests.training.conftest import month, round_world_at
from pulse_assets_tests.training.dagster_worker import (
    IN_PROCESS,
    PARTITION_TAG,
    SETTINGS_ENV,
    retrain_job,
)

SEED = 424242
EPOCHS = 5
ROUND = "2016-07-01"  # the first round: it reads no previous round


def resumable_config(raw: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Every epoch runs, dropout draws from torch's RNG; SQL and MLflow stores under ``tmp``."""
    raw = copy.deepcopy(raw)
    raw["sql"] = {"url": f"sqlite:///{tmp / 'pulse.db'}"}
    raw["training"]["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "retries": 0}
    raw["training"]["optimizer"] |= {"epochs": EPOCHS, "patience": 50}
    raw["training"]["model"] |= {"dropout": 0.2}
    return raw


@contextlib.contextmanager
def held_dagster_run(tmp: Path, hold_at_step: int) -> Iterator[subprocess.Popen]:
    """A Dagster retrain run in its own process, stopped inside optimizer step ``hold_at_step``;
    killed on the way out whatever the test did."""
    progress, log = tmp / "progress.txt", tmp / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pulse_assets_tests.training.dagster_worker",
                "--progress",
                str(progress),
                "--hold-at-step",
                str(hold_at_step),
                "--round",
                ROUND,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not (progress.exists() and "held" in progress.read_text().split("\n")):
            assert worker.poll() is None, f"the worker ended first: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never held: {log.read_text()[-3000:]}"
            time.sleep(0.01)
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def tick(settings: Settings, instance: dg.DagsterInstance) -> str:
    sensor = build_definitions(settings).resolve_sensor_def(DEAD_RUN_SENSOR)
    with dg.build_sensor_context(instance=instance) as context:
        result = sensor.evaluate_tick(context)
    assert not result.run_requests
    return str(result.skip_message)


def uninterrupted_weights(settings: Settings, tmp: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The same round trained in one go through the domain code: its training id and weights."""
    tmp.mkdir()
    outcome = round_world_at(settings, tmp).run(ROUND, None)
    assert outcome.result is not None and outcome.result.resumed_from is None
    return outcome.record.training_id, outcome.challenger_module.state_dict()


def round_observation(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """The metadata of the round's own observation in run ``run_id``."""
    [event] = [
        record.dagster_event
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
        if record.dagster_event is not None and record.dagster_event.asset_key == MODEL_KEY
    ]
    observation = event.asset_observation_data.asset_observation
    assert observation.partition == ROUND
    return {k: v.value for k, v in observation.metadata.items()}


def test_a_killed_training_run_fails_then_reexecution_resumes_to_identical_weights(
    trained_world, tmp_path, monkeypatch
):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(
        json.dumps(resumable_config(trained_world["raw"], tmp_path), default=str)
    )
    settings = Settings.model_validate(json.loads(settings_file.read_text()))
    home, dagster_home = tmp_path / "pulse_home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("PULSE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))

    world = round_world_at(settings, tmp_path)
    data = round_data(
        world.features, world.labels, settings.training, settings.rounds, month(ROUND).start
    )
    windows = len(data.fit) - settings.training.model.lookback_rows + 1
    batches = math.ceil(windows / settings.training.optimizer.batch_size)
    rng = random.Random(SEED)
    epoch, batch = rng.randint(2, EPOCHS - 1), rng.randint(1, batches - 1)
    where = f"seed {SEED}: killed in epoch {epoch} after its batch {batch}"
    hold_at = (epoch - 1) * batches + batch
    with held_dagster_run(tmp_path, hold_at) as worker, dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert tick(settings, instance) == "every STARTED run still has its process"
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert worker.returncode == -signal.SIGKILL
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        message = tick(settings, instance)
        assert message.startswith(f"marked 1 run(s) failed: {run.run_id} (pid "), message
        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert tick(settings, instance) == "every STARTED run still has its process"

        [folder] = (home / "checkpoints").iterdir()
        epochs = sorted(int(p.stem.split("-")[1]) for p in folder.glob("epoch-*.pt"))
        assert epochs[-1] == epoch - 1, f"{where}: checkpoints {epochs}"

        result = dg.execute_job(
            dg.reconstructable(retrain_job),
            instance,
            run_config=IN_PROCESS,
            reexecution_options=dg.ReexecutionOptions.from_failure(run.run_id, instance),
            # execute_job does not copy the parent's tags (the UI's re-execution does): the
            # round partition has to be named again, as the UI would carry it.
            tags={PARTITION_TAG: failed.tags[PARTITION_TAG]},
        )
        assert result.success, where
        rerun = instance.get_run_by_id(result.run_id)
        assert rerun.parent_run_id == run.run_id and rerun.tags[PARTITION_TAG] == ROUND
        event = instance.get_latest_materialization_event(MODEL_KEY)
        assert event.asset_materialization.partition == ROUND
        meta = round_observation(instance, result.run_id)
        resumed_at = f"resuming training from checkpoint epoch {epoch - 1} in {folder}"
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
        assert any(resumed_at in message for message in messages), where
    assert meta["epochs_run"] == EPOCHS and meta["trained"] is True, where
    assert meta["warm_start_from"] == "cold start" and meta["challenger_version"] == 1, where

    registry = build_resources(settings)["registry"].get()
    [version] = registry.versions()
    assert VersionTags.of(version).training_id == folder.name, where
    resumed = registry.load(version.version).state_dict()
    identity, whole = uninterrupted_weights(settings, tmp_path / "uninterrupted")
    assert identity == folder.name, where
    assert resumed.keys() == whole.keys()
    differing = [k for k in whole if not torch.equal(resumed[k], whole[k])]
    assert not differing, f"{where}: {differing} differ from the uninterrupted training"


def test_a_pid_that_exists_but_started_after_the_run_is_not_the_runs_process():
    """Pid reuse: the current process counts as gone for a run that started before it."""
    assert process_gone(2**22 + 12345, time.time())  # above Linux's pid_max: no such process
    found = linux_process(os.getpid())
    if found is None:
        pytest.skip("no /proc on this system: only the existence check applies")
    _, started = found
    assert not process_gone(os.getpid(), started + 1)
    assert process_gone(os.getpid(), started - 60)
