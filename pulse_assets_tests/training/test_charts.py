"""The lineage chart reads models/forecast_model rows (RoundRecord) and renders a PNG."""

from datetime import date
from pathlib import Path

import matplotlib.image
import polars as pl
import pytest

from pulse_assets.evaluation.charts import ChartInputError
from pulse_assets.training.charts import lineage_chart, lineage_points
from pulse_assets.training.rounds import RoundRecord

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(
    month: int,
    champion: str,
    challenger: str,
    promoted: bool = False,
    trained: bool = True,
    duplicate_of: str | None = None,
) -> pl.DataFrame:
    """One row of models/forecast_model, as a round writes it."""
    start = date(2016, month, 1)
    return RoundRecord(
        round=start.isoformat(),
        start=start,
        cutoff=start,
        champion=champion,
        challenger=challenger,
        challenger_cutoff=start,
        promoted=promoted,
        decision="promoted" if promoted else "kept",
        shadow_days=20,
        shadow_champion_rmse=0.006,
        shadow_challenger_rmse=0.005,
        dm_statistic=-1.2,
        dm_p_value=0.1,
        trained=trained,
        duplicate_of=duplicate_of,
        training_id="t",
        train_first=date(2014, 1, 2),
        train_last=date(2015, 12, 30),
        train_rows=400,
        epochs_run=8,
        train_seconds=1.5,
        warm_start_from=None,
    ).to_frame()


RECORDS = pl.concat(
    [
        record(3, "1", "2"),  # out of order on purpose: the chart sorts by start
        record(1, "1", "1"),
        record(2, "1", "2", trained=False, duplicate_of="2"),  # a re-run found version 2
        record(4, "2", "3", promoted=True),
        record(5, "2", "3", trained=False),  # nothing new trained, no duplicate named
    ]
)


def test_points_are_version_numbers_by_start_with_the_challengers_kind():
    points = lineage_points(RECORDS)
    assert points["round"].to_list() == [f"2016-0{m}-01" for m in range(1, 6)]
    assert points["champion_no"].to_list() == [1, 1, 1, 2, 2]
    assert points["challenger_no"].to_list() == [1, 2, 2, 3, 3]
    assert points["challenger_kind"].to_list() == [
        "trained",
        "duplicate",
        "trained",
        "trained",
        "not trained",
    ]
    assert points["promoted"].to_list() == [False, False, False, True, False]


def test_versions_that_are_not_numbers_and_empty_frames_are_refused():
    named = RECORDS.with_columns(pl.lit("latest").alias("champion"))
    with pytest.raises(ChartInputError, match="names champion 'latest'.*whole numbers"):
        lineage_points(named)
    with pytest.raises(ValueError, match="no round in models/forecast_model"):
        lineage_chart(RECORDS.head(0), Path("unused.png"))
    with pytest.raises(ChartInputError, match=r"lacks column\(s\) \['promoted'\]"):
        lineage_chart(RECORDS.drop("promoted"), Path("unused.png"))


def test_the_lineage_renders_a_png(tmp_path):
    path = lineage_chart(RECORDS, tmp_path / "lineage.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (990, 495)
