"""Checkpoints per epoch under ``<root>/<training id>``: atomic, the latest K kept.

The plan's CheckpointManager, on disk: each checkpoint holds the model, optimizer, epoch,
metrics and RNG states, so training resumed from it continues exactly as if uninterrupted.
A checkpoint holds tensors, numbers, strings and plain containers only and is read with
``torch.load(weights_only=True)``: a file planted in the folder cannot run code, it fails
to load with a :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from pulse_assets.errors import PulseError

NAME = re.compile(r"^epoch-(\d{5})\.pt$")
TEMP_PREFIX, TEMP_SUFFIX = ".epoch-", ".tmp"


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
        handle, temp = tempfile.mkstemp(dir=self.folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
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

    def discard_partial_writes(self) -> list[Path]:
        """Remove temp files a killed process left mid-write; call before training starts.

        One training id has one writer at a time (a run, then its retry or re-execution),
        so a temp file present before training starts belongs to a process that is gone.
        """
        if not self.folder.exists():
            return []
        partial = [
            path
            for path in self.folder.iterdir()
            if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)
        ]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def load(self, epoch: int) -> dict[str, Any]:
        path = self.folder / f"epoch-{epoch:05d}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors, numbers and plain "
                "containers, so it was not loaded (loading it could run code): it was written "
                "by an older release or placed there by someone else. Delete the folder "
                f"{self.folder} to start this training over"
            ) from error
        except (OSError, RuntimeError, EOFError) as error:
            raise CheckpointError(
                f"checkpoint {path} cannot be read: {error}; delete it to resume from the "
                "one before, or delete the folder to start over"
            ) from error
        if not isinstance(state, dict):
            raise CheckpointError(
                f"checkpoint {path} holds a {type(state).__name__}, not a training state; "
                f"delete the folder {self.folder} to start this training over"
            )
        return state

    def latest(self) -> dict[str, Any] | None:
        epochs = self.epochs()
        return self.load(epochs[-1]) if epochs else None
