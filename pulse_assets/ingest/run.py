"""One ingestion: fetch a source's window and split it into good and quarantined rows."""

from __future__ import annotations

from datetime import date

import polars as pl

from pulse_assets.config import SourceSchema
from pulse_assets.ingest.base import Source
from pulse_assets.ingest.validation import ValidatedFrame, validate

PARTITION_COLUMN = "partition"


def ingest_window(source: Source, schema: SourceSchema, start: date, end: date) -> ValidatedFrame:
    """Rows of ``source`` dated in [start, end), validated against ``schema``.

    Quarantined rows get a ``partition`` column: their date, or ``start`` for rows whose date
    could not be read, so each lands in a partition of this run and is replaced by a re-run.
    """
    checked = validate(source.fetch(start, end), schema, source.name)
    in_window = pl.col("date").is_between(start, end, closed="left") | pl.col("date").is_null()
    quarantined = checked.quarantined.filter(in_window).with_columns(
        pl.col("date").fill_null(start).cast(pl.String).alias(PARTITION_COLUMN)
    )
    good = checked.good.filter(pl.col("date").is_between(start, end, closed="left"))
    return ValidatedFrame(good=good, quarantined=quarantined)
