"""Checkpoints per epoch under ``<root>/<training id>``: atomic, the latest K kept.

The plan's CheckpointManager, on disk or on S3: each checkpoint holds the model, optimizer, epoch,
metrics and RNG states, so training resumed from it continues exactly as if uninterrupted.
A checkpoint holds tensors, numbers, strings and plain containers only and is read with
``torch.load(weights_only=True)``: a file planted in the folder cannot run code, it fails
to load with a :class:`CheckpointError`.

The root is a local folder (temp file, fsync, rename) or an ``s3://`` URL opened with
``pulse_assets.storage.s3.open_root`` (s3fs): there a checkpoint is one PUT, which is atomic,
so a process killed mid-save leaves the previous checkpoints and no partial object.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from upath import UPath

from pulse_assets.errors import PulseError
from pulse_assets.storage.s3 import S3_FAILURES, describe_failure, open_root, put_object

NAME = re.compile(r"^epoch-(\d{5})\.pt$")
TEMP_PREFIX, TEMP_SUFFIX = ".epoch-", ".tmp"


class CheckpointError(PulseError):
    """A checkpoint could not be written or read."""


class CheckpointStore:
    """Checkpoints of one training. ``root`` is a folder, an ``s3://`` URL (s3fs with the
    default S3 settings) or a ``UPath`` from ``open_root`` carrying the configured ones."""

    def __init__(
        self, root: str | os.PathLike[str] | UPath, training_id: str, keep: int = 3
    ) -> None:
        self.folder = open_root(root) / training_id
        self.keep = keep

    def epochs(self) -> list[int]:
        try:
            if not self.folder.exists():
                return []
            found = (NAME.match(path.name) for path in self.folder.iterdir())
            return sorted(int(match.group(1)) for match in found if match)
        except S3_FAILURES as error:
            raise CheckpointError(
                f"could not list checkpoints in {self.folder}: {describe_failure(error)}"
            ) from None

    def save(self, epoch: int, state: dict[str, Any]) -> Path | UPath:
        target = self.folder / f"epoch-{epoch:05d}.pt"
        if isinstance(target, Path):
            _save_local(target, state)
        else:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            try:
                put_object(target, buffer.getvalue())
            except S3_FAILURES as error:
                # Not chained: the redacted cause is in the message (see storage.s3).
                raise CheckpointError(
                    f"could not write checkpoint {target}: {describe_failure(error)}; the "
                    "checkpoints before it are unchanged"
                ) from None
        for old in self.epochs()[: -self.keep]:
            self._remove(self.folder / f"epoch-{old:05d}.pt")
        return target

    def _remove(self, path: Path | UPath) -> None:
        try:
            path.unlink(missing_ok=True)
        except S3_FAILURES as error:
            raise CheckpointError(
                f"could not remove the old checkpoint {path}: {describe_failure(error)}"
            ) from None

    def discard_partial_writes(self) -> list[Path]:
        """Remove temp files a killed process left mid-write; call before training starts.

        One training id has one writer at a time (a run, then its retry or re-execution),
        so a temp file present before training starts belongs to a process that is gone.
        """
        folder = self.folder
        if not isinstance(folder, Path) or not folder.exists():
            return []  # an object store has no partial objects: a PUT is whole or absent
        partial = [
            path
            for path in folder.iterdir()
            if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)
        ]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def load(self, epoch: int) -> dict[str, Any]:
        path = self.folder / f"epoch-{epoch:05d}.pt"
        try:
            source = path if isinstance(path, Path) else io.BytesIO(_read_object(path))
            state = torch.load(source, map_location="cpu", weights_only=True)
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


def _read_object(path: UPath) -> bytes:
    try:
        return path.read_bytes()
    except S3_FAILURES as error:
        raise CheckpointError(
            f"could not read checkpoint {path}: {describe_failure(error)}"
        ) from None


def _save_local(target: Path, state: dict[str, Any]) -> None:
    """``state`` into ``target`` through a temp file, fsync and rename: whole or not at all."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
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
