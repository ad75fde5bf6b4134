"""One ingestion: fetch a source's window, split it into good and quarantined rows, and judge it.

The verdict is reached before anything is stored, so a window that fails it replaces nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import polars as pl

from pulse_assets.config import SourceSchema
from pulse_assets.ingest.base import Source
from pulse_assets.ingest.validation import REASON_COLUMN, validate

PARTITION_COLUMN = "partition"
FINGERPRINT_COLUMN = "row_fingerprint"


@dataclass(frozen=True)
class QuarantineVerdict:
    """Whether a window's quarantined share is acceptable, in total and per partition."""

    share: float
    max_share: float
    partition_shares: pl.DataFrame  # partition, good, quarantined, share; worst first
    max_partition_share: float
    blocks_on_partitions: bool

    @property
    def total_passed(self) -> bool:
        return self.share <= self.max_share

    @property
    def partitions_over(self) -> pl.DataFrame:
        return self.partition_shares.filter(pl.col("share") > self.max_partition_share)

    @property
    def passed(self) -> bool:
        """False when a blocking limit is crossed: then none of the window may be stored."""
        return self.total_passed and not (self.blocks_on_partitions and self.partitions_over.height)

    def describe(self) -> str:
        parts = [f"{self.share:.2%} of rows quarantined (limit {self.max_share:.0%})"]
        over = self.partitions_over
        if over.height:
            days = ", ".join(over.get_column(PARTITION_COLUMN).head(5).to_list())
            parts.append(
                f"{over.height} day(s) over {self.max_partition_share:.0%} (worst first: {days})"
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class WindowIngest:
    """The rows of one window: ``good`` and ``quarantined`` are dated inside it (quarantined
    rows carry their ``partition``); ``undated`` rows have no readable date, so they belong to
    no partition and are kept under a stable ``row_fingerprint`` instead."""

    good: pl.DataFrame
    quarantined: pl.DataFrame
    undated: pl.DataFrame

    def new_undated(self, known_fingerprints: Iterable[str]) -> pl.DataFrame:
        """Undated rows not quarantined by an earlier run: only these count again."""
        known = pl.Series(list(known_fingerprints), dtype=pl.String)
        return self.undated.filter(~pl.col(FINGERPRINT_COLUMN).is_in(known))

    def verdict(
        self,
        new_undated_rows: int,
        max_share: float,
        max_partition_share: float,
        blocks_on_partitions: bool = False,
    ) -> QuarantineVerdict:
        bad = self.quarantined.height + new_undated_rows
        total = self.good.height + bad
        return QuarantineVerdict(
            share=bad / total if total else 0.0,
            max_share=max_share,
            partition_shares=self._partition_shares(),
            max_partition_share=max_partition_share,
            blocks_on_partitions=blocks_on_partitions,
        )

    def _partition_shares(self) -> pl.DataFrame:
        good = self.good.group_by(pl.col("date").cast(pl.String).alias(PARTITION_COLUMN)).agg(
            pl.len().alias("good")
        )
        bad = self.quarantined.group_by(PARTITION_COLUMN).agg(pl.len().alias("quarantined"))
        counts = bad.join(good, on=PARTITION_COLUMN, how="left").with_columns(
            pl.col("good").fill_null(0).cast(pl.UInt32), pl.col("quarantined").cast(pl.UInt32)
        )
        share = pl.col("quarantined") / (pl.col("quarantined") + pl.col("good"))
        return counts.select(PARTITION_COLUMN, "good", "quarantined", share.alias("share")).sort(
            ["share", PARTITION_COLUMN], descending=[True, False]
        )


def _fingerprints(frame: pl.DataFrame) -> pl.Series:
    """A stable hash of each row's original values: the same row gets the same key in every
    run and every version (polars' own hash is stable only within one version)."""
    values = [pl.col(name).cast(pl.String).fill_null("\u2400") for name in frame.columns]
    texts = frame.select(pl.concat_str(values, separator="\u241f")).to_series()
    digests = [hashlib.sha256(text.encode()).hexdigest()[:20] for text in texts]
    return pl.Series(FINGERPRINT_COLUMN, digests, dtype=pl.String)


def ingest_window(source: Source, schema: SourceSchema, start: date, end: date) -> WindowIngest:
    """Rows of ``source`` dated in [start, end), validated against ``schema``."""
    checked = validate(source.fetch(start, end), schema, source.name)
    dated = pl.col("date").is_not_null()
    quarantined = checked.quarantined.filter(
        dated & pl.col("date").is_between(start, end, closed="left")
    ).with_columns(pl.col("date").cast(pl.String).alias(PARTITION_COLUMN))
    undated = checked.quarantined.filter(~dated)
    undated = undated.with_columns(_fingerprints(undated.drop(REASON_COLUMN)))
    good = checked.good.filter(pl.col("date").is_between(start, end, closed="left"))
    return WindowIngest(good=good, quarantined=quarantined, undated=undated)
