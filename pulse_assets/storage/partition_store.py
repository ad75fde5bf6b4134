"""A Parquet file per (table, partition), written atomically, read by key range.

The plan's FileStorageBackend pickled every record and rewrote one JSON index on each save,
so a save cost grew with the store and a query loaded everything. Here a partition is one
Parquet file named by its key: a range read opens only the files in the range, and a write
replaces exactly one file, atomically (temp file, fsync, rename), so a failed write leaves
the last good file in place.

The root is a local folder, an ``s3://bucket/prefix`` URL or any other fsspec URL (through
universal-pathlib). On S3 every partition is one PUT through a boto3 client (dagster-aws's
``S3Resource`` builds it in the code location): a PUT is atomic, so there is no temp object
and no rename (which S3 does as copy plus delete), and a write cut off mid-body leaves the
previous object as it was. See ``pulse_assets.storage.s3``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
from upath import UPath

from pulse_assets.config import S3Config
from pulse_assets.errors import StoreError
from pulse_assets.storage.s3 import S3Objects, is_s3_url, make_client

SUFFIX = ".parquet"
TEMP_SUFFIX = ".tmp"
UNPARTITIONED_KEY = "__all__"
# A temp file lives for one write (milliseconds); one this old was left by a killed writer.
STALE_TEMP_AGE_S = 600.0


def content_hash(frame: pl.DataFrame) -> str:
    """A short stable hash of a frame's schema and values: the data version of a write."""
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:16]


class PartitionStore:
    """Partitions under ``root``. For an ``s3://`` root, ``s3_client`` is the boto3 client to
    use (dagster-aws's ``S3Resource.get_client()`` in the code location); without one, a
    client is made from ``s3`` (endpoint, region, retries) and the environment's credentials."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        write_threads: int = 4,
        *,
        s3: S3Config | None = None,
        s3_client: Any = None,
    ) -> None:
        self.root = UPath(root)
        self._local = self.root.protocol in ("", "file", "local")
        self._write_threads = write_threads
        self._objects: S3Objects | None = None
        if is_s3_url(str(root)):
            client = s3_client if s3_client is not None else make_client(s3 or S3Config())
            self._objects = S3Objects.at(str(root), client)

    def __repr__(self) -> str:
        return f"PartitionStore({str(self.root)!r})"

    def table_path(self, table: str) -> UPath:
        return self.root.joinpath(*table.split("/"))

    def partition_path(self, table: str, key: str) -> UPath:
        return self.table_path(table) / f"{key}{SUFFIX}"

    def write(self, table: str, key: str, frame: pl.DataFrame) -> None:
        """Replace partition ``key`` of ``table`` with ``frame``, atomically."""
        self.remove_stale_temps(table)
        self._write(table, key, frame)

    def remove_stale_temps(self, table: str, max_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
        """Delete the temp files of ``table`` that writers killed mid-write left behind.

        Only files older than ``max_age_s`` go, so a concurrent writer's live temp file stays.
        Object stores have no temp files: their puts are atomic.
        """
        folder = Path(self.table_path(table).path)
        if not self._local or not folder.is_dir():
            return []
        cutoff = time.time() - max_age_s
        removed = []
        for path in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.name)
        return removed

    def _relative(self, path: UPath) -> str:
        """``path`` relative to the root, as an object name under the store's prefix."""
        return path.path[len(self.root.path) :].lstrip("/")

    def _write(self, table: str, key: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=False)
        target = self.partition_path(table, key)
        if self._objects is not None:
            self._objects.put(self._relative(target), buffer.getvalue())
            return
        try:
            if self._local:
                _atomic_local_write(Path(target.path), buffer.getvalue())
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(buffer.getvalue())
        except OSError as error:
            raise StoreError(
                f"could not write partition {key} of {table} to {target}: {error}; "
                "the previous file, if any, is unchanged"
            ) from error

    def write_partitions(
        self,
        table: str,
        frame: pl.DataFrame,
        keys: Sequence[str],
        key_column: str = "date",
        keep_key_column: bool = True,
    ) -> dict[str, int]:
        """Split ``frame`` by ``key_column`` and replace every partition in ``keys``.

        A key with no rows gets an empty file with the frame's schema (a weekend is a
        partition without data, not a missing one). Rows outside ``keys`` are an error:
        they would otherwise be silently dropped.
        """
        key_values = frame.get_column(key_column).cast(pl.String)
        outside = frame.filter((~key_values.is_in(list(keys))).fill_null(True))
        if outside.height:
            column = "date" if "date" in frame.columns else key_column
            stray = outside.get_column(column).cast(pl.String).unique().sort().to_list()[:5]
            raise StoreError(
                f"{outside.height} row(s) of {table} fall outside the partitions being written "
                f"(first keys: {stray}); the asset must return rows of its own partitions only"
            )
        groups = {
            str(key[0]): part
            for key, part in frame.with_columns(key_values.alias("__key")).group_by("__key")
        }
        dropped = ["__key"] if keep_key_column else ["__key", key_column]
        empty = frame.clear()
        parts = {key: groups.get(key, empty).drop(dropped, strict=False) for key in keys}
        self.remove_stale_temps(table)
        with ThreadPoolExecutor(self._write_threads) as pool:
            list(pool.map(lambda item: self._write(table, *item), parts.items()))
        return {key: part.height for key, part in parts.items()}

    def keys(self, table: str) -> list[str]:
        """Partition keys present for ``table``, sorted."""
        path = self.table_path(table)
        if self._objects is not None:
            names = self._objects.names(self._relative(path))
        elif path.exists():
            names = [entry.name for entry in path.iterdir()]
        else:
            return []
        return sorted(
            name[: -len(SUFFIX)]
            for name in names
            if name.endswith(SUFFIX) and not name.startswith(".")
        )

    def read(self, table: str, keys: Iterable[str]) -> pl.DataFrame:
        """The union of partitions ``keys`` of ``table``, in key order; each key must exist."""
        wanted = sorted(set(keys))
        paths = [self.partition_path(table, key) for key in wanted]
        if self._objects is not None:  # one listing instead of a request per key
            present = set(self.keys(table))
            missing = [key for key in wanted if key not in present]
        else:
            missing = [key for key, path in zip(wanted, paths, strict=True) if not path.exists()]
        if missing:
            raise StoreError(
                f"{len(missing)} partition(s) of {table} are not in the store at {self.root} "
                f"(first: {missing[:5]}); materialize them before reading them"
            )
        if not paths:
            raise StoreError(f"no partitions of {table} were asked for; name at least one key")
        if self._objects is not None:  # a GET waits on the network: several at once
            with ThreadPoolExecutor(self._write_threads) as pool:
                frames = list(pool.map(self._read_file, paths))
        else:
            frames = [self._read_file(path) for path in paths]
        # one chunk, not one per file: every later filter and sort would walk them all
        return pl.concat(_aligned(frames, table, wanted), how="vertical_relaxed", rechunk=True)

    def read_range(self, table: str, first: str, last: str) -> pl.DataFrame:
        """Partitions with ``first <= key <= last`` (ISO dates sort as text); others are not opened."""
        selected = [key for key in self.keys(table) if first <= key <= last]
        if not selected:
            raise StoreError(f"{table} has no partitions between {first} and {last} at {self.root}")
        return self.read(table, selected)

    def read_prefix(self, table: str, keys: Sequence[str]) -> pl.DataFrame:
        """Partitions ``keys`` in order up to the first one not in the store (at least one).

        For readers of the future such as labels: a day not ingested yet ends the read
        instead of being skipped, so a gap can never pass for the next day.
        """
        present = set(self.keys(table))
        prefix = list(itertools.takewhile(present.__contains__, keys))
        return self.read(table, prefix or keys[:1])

    def _read_file(self, path: UPath) -> pl.DataFrame:
        try:
            if self._objects is not None:
                return pl.read_parquet(io.BytesIO(self._objects.get(self._relative(path))))
            if self._local:
                return pl.read_parquet(Path(path.path))
            with path.open("rb") as handle:
                return pl.read_parquet(handle)
        except (OSError, pl.exceptions.PolarsError) as error:
            raise StoreError(
                f"partition file {path} cannot be read: {error}; re-materialize that partition"
            ) from error


def _aligned(frames: list[pl.DataFrame], table: str, keys: list[str]) -> list[pl.DataFrame]:
    """Partitions written with the same columns in another order (a schema's columns
    reordered in config) read as the first one's order; other columns are an error."""
    columns = frames[0].columns
    for key, frame in zip(keys, frames, strict=True):
        if set(frame.columns) != set(columns):
            raise StoreError(
                f"partition {key} of {table} has columns {frame.columns}, partition {keys[0]} "
                f"has {columns}: the schema changed between writes; re-materialize the range"
            )
    return [frame.select(columns) for frame in frames]


def _atomic_local_write(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(payload)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
