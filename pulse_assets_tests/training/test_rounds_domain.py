"""Walk-forward rounds through the domain code: real 2015-2016 data, a real MLflow sqlite
registry in tmp, real trained modules."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from pulse_assets.evaluation.retrodiction import forecast_days
from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.training.audit import AliasEvent, holder_at
from pulse_assets.training.dataset import Dataset, assemble
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.registry import CHALLENGER, CHAMPION, VersionTags
from pulse_assets.training.rounds import (
    RoundData,
    ShadowDecision,
    decide_champion,
    known_labels,
    live_cutoff,
    round_data,
)
from pulse_assets_tests.training.conftest import RoundWorld, month, round_world_at

CUTOFF = date(2016, 7, 1)
LABEL = "sp500_abs_return_next"


def data_of(world: RoundWorld, features: pl.DataFrame, labels: pl.DataFrame) -> RoundData:
    return round_data(features, labels, world.settings.training, world.settings.rounds, CUTOFF)


def same(left: Dataset, right: Dataset) -> bool:
    return (
        np.array_equal(left.dates, right.dates)
        and np.array_equal(left.features, right.features)
        and np.array_equal(left.labels, right.labels)
    )


def tampered(frame: pl.DataFrame, when: pl.Expr) -> pl.DataFrame:
    """Every numeric value of the rows matching ``when`` replaced by 999."""
    numeric = [c for c, t in frame.schema.items() if c != "date" and t.is_numeric()]
    return frame.with_columns(
        pl.when(when).then(pl.lit(999.0)).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)
        for c in numeric
    )


def test_a_value_known_at_or_after_the_cutoff_never_reaches_the_rounds_data(
    round_world: RoundWorld,
):
    world = round_world
    honest = data_of(world, world.features, world.labels)
    trading_days = world.labels.filter(pl.col("date") < CUTOFF).get_column("date").sort()
    last_before, one_before = trading_days[-1], trading_days[-2]
    assert honest.last == one_before and last_before < CUTOFF

    future = pl.col("date") >= CUTOFF
    resolves_on_cutoff = pl.col("date") == last_before
    cheat = data_of(
        world,
        tampered(world.features, future),
        tampered(world.labels, future | resolves_on_cutoff),
    )
    assert same(cheat.fit, honest.fit) and same(cheat.valid, honest.valid)
    assert cheat.fingerprint == honest.fingerprint

    known_late = data_of(
        world, world.features, tampered(world.labels, pl.col("date") == one_before)
    )
    assert not same(known_late.valid, honest.valid), "a known label must reach the data"
    assert known_late.fingerprint != honest.fingerprint


def test_the_embargo_drops_rows_between_fit_and_validation(round_world: RoundWorld):
    world = round_world
    known = known_labels(world.labels, CUTOFF).filter(
        pl.col("date") >= CUTOFF - timedelta(days=world.settings.training.window_days)
    )
    every = list(assemble(world.features, known, [LABEL]).dates)
    for embargo in (1, 3):
        rounds = world.settings.rounds.model_copy(update={"embargo_rows": embargo})
        data = round_data(world.features, world.labels, world.settings.training, rounds, CUTOFF)
        last_fit, first_valid = every.index(data.fit.dates[-1]), every.index(data.valid.dates[0])
        assert first_valid - last_fit == embargo + 1, f"embargo {embargo}"
        assert len(data.fit) + embargo + len(data.valid) == len(every)


def test_known_labels_and_live_cutoff_by_hand():
    days = [date(2016, 6, 28), date(2016, 6, 29), date(2016, 6, 30), date(2016, 7, 1)]
    labels = pl.DataFrame(
        {"date": [*days, date(2016, 7, 5)], LABEL_PREFIX + LABEL: [0.1, 0.2, None, 0.4, 0.5]}
    )

    def known(cutoff: date) -> list[date]:
        return known_labels(labels, cutoff).get_column("date").to_list()

    assert known(date(2016, 7, 5)) == days[:3]  # July 1st's label resolves on July 5th
    assert known(date(2016, 7, 6)) == days
    assert known(date(2016, 6, 29)) == []
    assert known(date(2016, 6, 1)) == []

    assert live_cutoff(labels, month("2016-07-01")) == date(2016, 7, 6)
    assert live_cutoff(labels, month("2016-06-01")) == date(2016, 7, 1)
    assert live_cutoff(labels, month("2016-08-01")) == date(2016, 8, 1)


def move(alias: str, version: str, as_of: date | None) -> AliasEvent:
    return AliasEvent(
        "m", alias, None, version, "test", "by hand", {}, None, datetime.now(UTC), as_of
    )


def test_holder_at_answers_by_as_of_then_by_order_of_recording():
    events = [
        move(CHAMPION, "1", date(2016, 7, 1)),
        move(CHAMPION, "2", date(2016, 8, 1)),
        move(CHALLENGER, "9", date(2016, 7, 10)),
        move(CHAMPION, "3", date(2016, 7, 15)),  # recorded later, effective earlier
        move(CHAMPION, "8", None),  # no simulated date: never a holder of a day
    ]
    answers = {
        date(2016, 6, 30): None,
        date(2016, 7, 1): "1",
        date(2016, 7, 14): "1",
        date(2016, 7, 15): "3",
        date(2016, 7, 31): "3",
        date(2016, 8, 1): "2",
        date(2016, 9, 1): "2",
    }
    assert {day: holder_at(events, CHAMPION, day) for day in answers} == answers
    assert holder_at(events, CHALLENGER, date(2016, 7, 20)) == "9"
    events.append(move(CHAMPION, "4", date(2016, 8, 1)))
    assert holder_at(events, CHAMPION, date(2016, 8, 1)) == "4"
    assert holder_at(events, CHAMPION, date(2016, 7, 20)) == "3"


def biased(module: ForecastModule, sigmas: float) -> ForecastModule:
    """A copy of a trained module whose forecasts are ``sigmas`` label deviations too high."""
    worse = copy.deepcopy(module)
    with torch.no_grad():
        worse.y_mean += sigmas * worse.y_std
    return worse


def decision(
    world: RoundWorld, champion: ForecastModule, challenger: ForecastModule, **promotion: object
) -> ShadowDecision:
    min_days = promotion.pop("min_shadow_days", 5)
    assert isinstance(min_days, int)
    config = world.settings.training.promotion.model_copy(update=promotion)
    return decide_champion(
        champion,
        challenger,
        ("1", "2"),
        world.features,
        world.labels,
        (date(2016, 7, 1), date(2016, 8, 1)),
        config,
        min_days,
        LABEL,
    )


def test_decide_champion_on_the_shadow_days(round_world: RoundWorld):
    good = round_world.run("2016-07-01", None).challenger_module
    bad = biased(good, 1.0)

    better = decision(round_world, bad, good)
    assert better.promoted and better.champion == "2" and better.days >= 15
    assert better.dm_p_value is not None and better.dm_p_value < 0.01
    assert better.challenger_rmse < better.champion_rmse  # type: ignore[operator]
    assert better.reason.startswith(f"promoted on {better.days} shadow days")

    worse = decision(round_world, good, bad)
    assert not worse.promoted and worse.champion == "1"
    assert worse.dm_p_value is not None and worse.dm_p_value > 0.5

    few = decision(round_world, bad, good, min_shadow_days=better.days + 1)
    assert not few.promoted and few.champion == "1" and few.days == better.days
    assert few.reason == (
        f"champion 1 kept: {better.days} shadow day(s) of challenger 2, fewer than the "
        f"{better.days + 1} a decision needs"
    )

    slightly = biased(good, 0.3)
    p = decision(round_world, slightly, good).dm_p_value
    assert p is not None and p > 0
    strict = decision(round_world, slightly, good, significance_level=p / 2)
    assert not strict.promoted and "not promoted" in strict.reason
    margin_alone = decision(round_world, slightly, good, significance_level=None)
    assert margin_alone.promoted and margin_alone.dm_p_value == pytest.approx(p)
    high_bar = decision(round_world, slightly, good, significance_level=None, min_improvement=0.9)
    assert not high_bar.promoted and "does not beat champion" in high_bar.reason


def test_a_warm_started_round_starts_from_the_champion(round_world: RoundWorld):
    world = round_world
    first = world.run("2016-07-01", None)
    second = world.run("2016-08-01", first.record)
    assert second.record.warm_start_from == "1" and second.record.champion == "1"
    assert second.record.epochs_run == world.settings.rounds.warm_start_epochs == 3
    assert VersionTags.of(world.registry.version("2")).warm_start_from == "1"
    assert "cold start" not in "\n".join(world.messages)


def test_a_warm_start_that_cannot_apply_is_a_logged_cold_start(round_world: RoundWorld):
    world = round_world
    first = world.run("2016-07-01", None)
    fewer = list(first.challenger_module.feature_names[1:])
    changed = world.settings.training.model_copy(update={"features": fewer})
    second = world.run("2016-08-01", first.record, world.context(training=changed))
    assert second.record.warm_start_from is None and second.record.trained
    assert any(
        m.startswith("cold start instead of warm start from version 1: the feature columns")
        for m in world.messages
    ), world.messages
    run = world.registry.client.get_run(str(world.registry.version("2").run_id))
    assert run.data.params["epochs"] == str(world.settings.training.optimizer.epochs) == "6"
    assert VersionTags.of(world.registry.version("2")).warm_start_from is None


def forecasts(module: ForecastModule, world: RoundWorld) -> pl.DataFrame:
    return forecast_days(module, world.features, date(2016, 7, 1), date(2016, 8, 1))


def test_the_same_round_twice_is_one_version_with_identical_forecasts(round_world: RoundWorld):
    world = round_world
    first = world.run("2016-07-01", None)
    moves = len(world.registry.audit.history("forecast_test"))
    again = world.run("2016-07-01", None)
    assert first.record.trained and not again.record.trained
    assert again.record.duplicate_of == "1" and again.record.challenger == "1"
    assert again.record.training_id == first.record.training_id
    assert [v.version for v in world.registry.versions()] == ["1"]
    assert len(world.registry.audit.history("forecast_test")) == moves
    assert forecasts(again.challenger_module, world).equals(
        forecasts(first.challenger_module, world)
    )

    (world.tmp / "elsewhere").mkdir()
    elsewhere = round_world_at(world.settings, world.tmp / "elsewhere")
    fresh = elsewhere.run("2016-07-01", None)
    assert fresh.record.trained and fresh.record.training_id == first.record.training_id
    assert forecasts(fresh.challenger_module, world).equals(
        forecasts(first.challenger_module, world)
    )
