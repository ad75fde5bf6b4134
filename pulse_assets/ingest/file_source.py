"""A user's own CSV or Parquet files, mapped to (date, entity, values) by configuration alone."""

from __future__ import annotations

import glob
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field

from pulse_assets.config import TimeZoneName
from pulse_assets.errors import SourceError
from pulse_assets.ingest.base import Source, SourceParams


class FileSourceParams(SourceParams):
    path: str = Field(description="a file path or a glob such as data/prices_*.csv")
    format: Literal["auto", "csv", "parquet"] = "auto"
    time_column: str
    time_format: str | None = Field(
        default=None, description="strftime format; none parses ISO dates and timestamps"
    )
    time_zone: TimeZoneName = Field(
        default="UTC", description="zone the day is taken in; naive times are local to it"
    )
    entity_column: str | None = None
    entity: str | None = Field(default=None, description="constant entity when no column has one")
    columns: dict[str, str] = Field(min_length=1, description="output name -> column in the file")


class FileSource(Source):
    """CSV or Parquet at a path or glob. Values stay untyped here; the schema check types them."""

    Params = FileSourceParams
    params: FileSourceParams

    def location(self) -> str:
        return self.params.path

    def _files(self) -> list[str]:
        files = sorted(glob.glob(self.params.path))
        if not files:
            raise SourceError(
                self.name,
                self.params.path,
                "no file matches the path",
                "check the path in configs/ and that the files were copied there",
            )
        return files

    def _read(self, file: str) -> pl.DataFrame:
        kind = self.params.format
        if kind == "auto":
            kind = "parquet" if Path(file).suffix.lower() in {".parquet", ".pq"} else "csv"
        try:
            if kind == "parquet":
                return pl.read_parquet(file)
            return pl.read_csv(file, infer_schema=False)
        except (OSError, pl.exceptions.PolarsError) as error:
            raise SourceError(
                self.name,
                file,
                f"cannot be read as {kind}: {error}",
                "check the file is complete and the format setting matches it",
            ) from error

    def _day(self, column: pl.Expr) -> pl.Expr:
        """Local day in ``time_zone``: aware timestamps are converted, naive ones read as local."""
        params = self.params
        return (
            column.cast(pl.String)
            .str.to_datetime(params.time_format, time_zone=params.time_zone, strict=False)
            .dt.date()
        )

    def _select(self, frame: pl.DataFrame, file: str) -> pl.DataFrame:
        params = self.params
        needed = [params.time_column, *params.columns.values()]
        if params.entity_column:
            needed.append(params.entity_column)
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise SourceError(
                self.name,
                file,
                f"column(s) {missing} not found (columns: {frame.columns})",
                "fix the column mapping of this source in configs/",
            )
        if params.entity_column:
            entity = pl.col(params.entity_column).cast(pl.String)
        else:
            entity = pl.lit(params.entity or self.name)
        return frame.select(
            self._day(pl.col(params.time_column)).alias("date"),
            entity.alias("entity"),
            *[pl.col(src).alias(out) for out, src in params.columns.items()],
        )

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        frames = [self._select(self._read(file), file) for file in self._files()]
        frame = pl.concat(frames, how="vertical_relaxed")
        in_window = pl.col("date").is_between(start, end, closed="left")
        unreadable_time = pl.col("date").is_null()
        return frame.filter(in_window | unreadable_time)
