"""Runs a training in its own process, so tests can SIGKILL a real one.

With --kill-at-epoch it SIGKILLs itself after that epoch's checkpoint; with --kill-at-step
after that optimizer step (mid-epoch), with --hold-at-step it stops there until killed from
outside. --progress appends ``step N`` after each optimizer step and ``epoch N`` after each
checkpointed epoch, so a test sees where the process is; --step-delay slows each step so an
outside kill at a random moment lands inside an epoch. A SIGKILL is a real crash: no cleanup,
no exception handling, only what checkpoints saved survives.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from pulse_assets.config import Settings
from pulse_assets.storage import PartitionStore
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import Dataset, assemble, chronological_split
from pulse_assets.training.trainer import EpochRecord, train


def load_data(settings: Settings) -> tuple[Dataset, Dataset]:
    store = PartitionStore(settings.store.root)
    features = store.read_range("features/daily_features", "2015-01-01", "2016-12-31")
    labels = store.read_range("features/daily_labels", "2015-01-01", "2016-12-31")
    data = assemble(features, labels, settings.training.labels)
    return chronological_split(data, settings.training.validation_share, settings.training.min_rows)


def _append(progress: Path | None, line: str) -> None:
    if progress is not None:
        with progress.open("a") as stream:
            stream.write(line + "\n")


def install_step_hook(
    progress: Path | None,
    step_delay: float = 0.0,
    kill_at_step: int | None = None,
    hold_at_step: int | None = None,
) -> None:
    """Count every optimizer step of this process (torch's global post-step hook)."""
    steps = 0

    def after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        nonlocal steps
        steps += 1
        _append(progress, f"step {steps}")
        if steps == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if steps == hold_at_step:
            _append(progress, "held")
            while True:
                time.sleep(1)
        if step_delay:
            time.sleep(step_delay)

    register_optimizer_step_post_hook(after_step)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--kill-at-epoch", type=int)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--hold-at-step", type=int)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--progress")
    parser.add_argument("--weights-out")
    args = parser.parse_args()
    settings = Settings.model_validate(json.loads(Path(args.settings).read_text()))
    fit, valid = load_data(settings)
    progress = Path(args.progress) if args.progress else None
    install_step_hook(progress, args.step_delay, args.kill_at_step, args.hold_at_step)

    def after_epoch(record: EpochRecord) -> None:
        _append(progress, f"epoch {record.epoch}")
        if record.epoch == args.kill_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    result = train(
        fit,
        valid,
        settings.training,
        CheckpointStore(Path(args.checkpoints), "run"),
        on_epoch_end=after_epoch,
    )
    if args.weights_out:
        torch.save(result.module.state_dict(), args.weights_out)


if __name__ == "__main__":
    main()
