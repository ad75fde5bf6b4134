"""Runs a training in its own process; with --kill-at-epoch it SIGKILLs itself after that epoch
(a real crash: no cleanup, no exception handling), leaving only what checkpoints saved."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

from pulse_assets.config import Settings
from pulse_assets.storage import PartitionStore
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import assemble, chronological_split
from pulse_assets.training.trainer import train


def load_data(settings: Settings):
    store = PartitionStore(settings.store.root)
    features = store.read_range("features/daily_features", "2015-01-01", "2016-12-31")
    labels = store.read_range("features/daily_labels", "2015-01-01", "2016-12-31")
    data = assemble(features, labels, settings.training.labels)
    return chronological_split(data, settings.training.validation_share, settings.training.min_rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--kill-at-epoch", type=int)
    parser.add_argument("--weights-out")
    args = parser.parse_args()
    settings = Settings.model_validate(json.loads(Path(args.settings).read_text()))
    fit, valid = load_data(settings)

    def crash(record) -> None:
        if record.epoch == args.kill_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    result = train(
        fit,
        valid,
        settings.training,
        CheckpointStore(Path(args.checkpoints), "run"),
        on_epoch_end=crash,
    )
    if args.weights_out:
        torch.save(result.module.state_dict(), args.weights_out)


if __name__ == "__main__":
    main()
