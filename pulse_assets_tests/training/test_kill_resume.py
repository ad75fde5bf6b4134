"""SIGKILL of a real training process at a random moment, then resume: identical weights.

The moment comes from a seeded RNG and is printed in every assertion message. Each worker
slows its optimizer steps (--step-delay) so that an outside kill lands inside an epoch, and
logs its steps and epochs to a progress file, so each test states where the kill landed.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pulse_assets.config import Settings
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets_tests.training.train_worker import load_data

STEP_DELAY = 0.04
EPOCHS = 6
WORKER = [sys.executable, "-m", "pulse_assets_tests.training.train_worker"]


def kill_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Every epoch runs (no early stop) and dropout draws from torch's RNG, which must resume."""
    raw = copy.deepcopy(raw)
    raw["training"]["optimizer"] |= {"epochs": EPOCHS, "patience": 50}
    raw["training"]["model"] |= {"dropout": 0.2}
    return raw


@pytest.fixture(scope="module")
def baseline(trained_world, tmp_path_factory) -> dict[str, Any]:
    """The settings file, batches per epoch and the weights of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("kill_resume")
    raw = kill_config(trained_world["raw"])
    settings_file = tmp / "settings.json"
    settings_file.write_text(json.dumps(raw, default=str))
    settings = Settings.model_validate(json.loads(settings_file.read_text()))
    fit, _ = load_data(settings)
    windows = len(fit) - settings.training.model.lookback_rows + 1
    batches = math.ceil(windows / settings.training.optimizer.batch_size)
    whole = subprocess.run(
        [
            *WORKER,
            "--settings",
            str(settings_file),
            "--checkpoints",
            str(tmp / "whole"),
            "--weights-out",
            str(tmp / "whole.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0, whole.stderr
    return {
        "settings_file": settings_file,
        "batches": batches,
        "weights": torch.load(tmp / "whole.pt", weights_only=True),
    }


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the worker ended (rc {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def progress_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def steps_done(path: Path) -> int:
    return sum(1 for line in progress_lines(path) if line.startswith("step "))


def start_worker(settings_file: Path, folder: Path, progress: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *WORKER,
            "--settings",
            str(settings_file),
            "--checkpoints",
            str(folder),
            "--step-delay",
            str(STEP_DELAY),
            "--progress",
            str(progress),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def resume_and_compare(baseline: dict[str, Any], folder: Path, out: Path, where: str) -> None:
    resumed = subprocess.run(
        [
            *WORKER,
            "--settings",
            str(baseline["settings_file"]),
            "--checkpoints",
            str(folder),
            "--weights-out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, f"{where}: resume failed: {resumed.stderr[-2000:]}"
    weights = torch.load(out, weights_only=True)
    assert weights.keys() == baseline["weights"].keys(), where
    differing = [k for k in weights if not torch.equal(weights[k], baseline["weights"][k])]
    assert not differing, f"{where}: tensors {differing} differ from the uninterrupted run"
    leftovers = [p.name for p in (folder / "run").iterdir() if p.suffix == ".tmp"]
    assert not leftovers, f"{where}: temp files left in the checkpoint folder: {leftovers}"


@pytest.mark.parametrize("seed", [20240611])
def test_sigkill_while_an_epoch_runs_then_resume_gives_identical_weights(baseline, tmp_path, seed):
    rng = random.Random(seed)
    epoch = rng.randint(2, EPOCHS - 1)
    delay = rng.uniform(0.15, 0.6) * baseline["batches"] * STEP_DELAY
    where = f"seed {seed}: SIGKILL {delay:.3f} s into epoch {epoch}"
    folder, progress = tmp_path / "killed", tmp_path / "progress.txt"
    store = CheckpointStore(folder, "run")
    worker = start_worker(baseline["settings_file"], folder, progress)
    wait_for(lambda: epoch - 1 in store.epochs(), worker, f"checkpoint {epoch - 1} ({where})")
    time.sleep(delay)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    steps, latest = steps_done(progress), store.epochs()[-1]
    where += (
        f"; landed after {steps} optimizer steps ({baseline['batches']} per epoch), "
        f"latest checkpoint epoch {latest}"
    )
    assert worker.returncode == -signal.SIGKILL, f"{where}: the worker was not killed"
    assert latest == epoch - 1, f"{where}: the kill missed epoch {epoch}"
    assert latest * baseline["batches"] < steps < (latest + 1) * baseline["batches"], (
        f"{where}: not inside an epoch"
    )
    resume_and_compare(baseline, folder, tmp_path / "resumed.pt", where)


@pytest.mark.parametrize("seed", [1999])
def test_sigkill_at_a_random_moment_then_resume_gives_identical_weights(baseline, tmp_path, seed):
    """Anywhere in the run: inside an epoch, inside a checkpoint write, between them."""
    rng = random.Random(seed)
    expected = EPOCHS * baseline["batches"] * STEP_DELAY
    delay = rng.uniform(0.05, 0.9) * expected
    where = f"seed {seed}: SIGKILL {delay:.3f} s after the first optimizer step"
    folder, progress = tmp_path / "killed", tmp_path / "progress.txt"
    worker = start_worker(baseline["settings_file"], folder, progress)
    wait_for(lambda: steps_done(progress) > 0, worker, f"the first step ({where})")
    time.sleep(delay)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    store = CheckpointStore(folder, "run")
    where += f"; landed after {steps_done(progress)} optimizer steps, checkpoints {store.epochs()}"
    assert worker.returncode == -signal.SIGKILL, f"{where}: the worker was not killed"
    resume_and_compare(baseline, folder, tmp_path / "resumed.pt", where)
