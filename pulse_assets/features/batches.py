"""Run a per-entity transform over a large table in entity batches, streamed to Parquet.

Every statistic of the pipeline is computed within one entity, so entities can be processed
in independent batches: peak memory then follows the batch, not the table. The source is
scanned lazily with a filter per batch; on a table sorted by entity, Parquet row-group
statistics let each scan skip the row groups of other entities.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from pulse_assets.errors import FeatureError


def sink_in_entity_batches(
    source: pl.LazyFrame,
    transform: Callable[[pl.LazyFrame], pl.LazyFrame],
    target: Path,
    *,
    entity_column: str = "entity",
    entities_per_batch: int = 32,
) -> int:
    """Write ``transform(batch)`` for each batch of entities to ``target/part-NNNNN.parquet``.

    Returns the number of rows written. ``target`` must not hold earlier parts.
    """
    if entities_per_batch < 1:
        raise FeatureError(f"entities_per_batch must be at least 1, got {entities_per_batch}")
    target.mkdir(parents=True, exist_ok=True)
    if any(target.glob("part-*.parquet")):
        raise FeatureError(f"{target} already holds part files; write to an empty folder")
    entities = source.select(pl.col(entity_column).unique().sort()).collect().to_series().to_list()
    rows = 0
    for index, start in enumerate(range(0, len(entities), entities_per_batch)):
        batch = entities[start : start + entities_per_batch]
        part = transform(source.filter(pl.col(entity_column).is_in(batch))).collect()
        part.write_parquet(target / f"part-{index:05d}.parquet")
        rows += part.height
    return rows
