"""Checkpoints per epoch under ``<root>/<training id>``: atomic, the latest K kept.

The plan's CheckpointManager, on disk: each checkpoint holds the model, optimizer, epoch,
metrics and RNG states, so training resumed from it continues exactly as if uninterrupted.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from pulse_assets.errors import PulseError

NAME = re.compile(r"^epoch-(\d{5})\.pt$")


class CheckpointError(PulseError):
    """A checkpoint could not be written or read."""


class CheckpointStore:
    def __init__(self, root: Path, training_id: str, keep: int = 3) -> None:
        self.folder = root / training_id
        self.keep = keep

    def epochs(self) -> list[int]:
        if not self.folder.exists():
            return []
        found = (NAME.match(path.name) for path in self.folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"epoch-{epoch:05d}.pt"
        handle, temp = tempfile.mkstemp(dir=self.folder, prefix=".epoch-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(state, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, target)
        except BaseException as error:
            Path(temp).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise CheckpointError(f"could not write checkpoint {target}: {error}") from error
            raise
        for old in self.epochs()[: -self.keep]:
            (self.folder / f"epoch-{old:05d}.pt").unlink(missing_ok=True)
        return target

    def load(self, epoch: int) -> dict[str, Any]:
        path = self.folder / f"epoch-{epoch:05d}.pt"
        try:
            return torch.load(path, weights_only=False)
        except (OSError, RuntimeError) as error:
            raise CheckpointError(
                f"checkpoint {path} cannot be read: {error}; delete it to start over"
            ) from error

    def latest(self) -> dict[str, Any] | None:
        epochs = self.epochs()
        return self.load(epochs[-1]) if epochs else None
