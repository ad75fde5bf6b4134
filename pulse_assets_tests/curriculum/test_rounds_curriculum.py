"""The curriculum on real data and in real training: three walk-forward rounds (July-September
2016, real MLflow registry in tmp) give the champions whose errors the October round's
curriculum reads; its weights then train October's challenger."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from pulse_assets.config import CurriculumSettings
from pulse_assets.curriculum import round_curriculum
from pulse_assets.curriculum.weights import Curriculum
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.model_files import ModelFileError
from pulse_assets.training.registry import VersionTags
from pulse_assets.training.rounds import RoundRecord, known_labels, round_data, run_round
from pulse_assets.training.service import ModelCache, ServiceLookup
from pulse_assets.training.trainer import _batch_loss, train
from pulse_assets_tests.conftest import SMALL_CURRICULUM
from pulse_assets_tests.training.conftest import RoundWorld, month
from pulse_assets_tests.training.train_worker import load_data

CUTOFF = date(2016, 10, 1)


@pytest.fixture
def walked(round_world: RoundWorld) -> tuple[RoundWorld, list[RoundRecord]]:
    records: list[RoundRecord] = []
    previous = None
    for key in ("2016-07-01", "2016-08-01", "2016-09-01"):
        previous = round_world.run(key, previous).record
        records.append(previous)
    return round_world, records


def curriculum_of(
    world: RoundWorld,
    records: list[RoundRecord],
    features: pl.DataFrame | None = None,
    labels: pl.DataFrame | None = None,
    **overrides: object,
) -> Curriculum:
    return round_curriculum(
        records,
        world.features if features is None else features,
        world.labels if labels is None else labels,
        ModelCache(world.registry).load,
        CUTOFF,
        world.settings.training,
        CurriculumSettings.model_validate(SMALL_CURRICULUM | overrides),
    )


def test_the_october_curriculum_reads_the_champions_of_july_to_september(walked):
    world, records = walked
    made = curriculum_of(world, records)
    assert made.reason is None, made.reason
    known = known_labels(world.labels, CUTOFF).filter(pl.col("date") >= date(2016, 7, 1))
    assert made.error_days == known.height > 50
    assert set(made.champions) == {r.champion for r in records}
    assert made.by_regime.get_column("scenario").to_list() == [
        date(2016, 7, 1),
        date(2016, 8, 1),
        date(2016, 9, 1),
    ]
    frame = made.scenarios
    assert frame.get_column("last").max() < CUTOFF
    for name in ("error_reduction", "coverage_expansion", "edge_case_exposure", "novelty"):
        values = frame.get_column(name)
        assert values.min() >= 0.0 and values.max() <= 1.0, name  # type: ignore[operator]
    weights = frame.get_column("weight").to_numpy()
    assert weights.max() / weights.min() == pytest.approx(3.0)
    data = round_data(
        world.features, world.labels, world.settings.training, world.settings.rounds, CUTOFF
    )
    fit = made.row_weights(pl.DataFrame({"date": data.fit.dates}))
    assert fit.mean() == pytest.approx(1.0) and fit.max() / fit.min() <= 3.0 + 1e-9


def tampered(frame: pl.DataFrame, when: pl.Expr) -> pl.DataFrame:
    """Every numeric value of the rows matching ``when`` replaced by 999."""
    numeric = [c for c, t in frame.schema.items() if c != "date" and t.is_numeric()]
    return frame.with_columns(
        pl.when(when).then(pl.lit(999.0)).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)
        for c in numeric
    )


def test_no_error_label_or_round_at_or_after_the_cutoff_reaches_the_curriculum(walked):
    world, records = walked
    honest = curriculum_of(world, records)
    october = world.run("2016-10-01", records[-1]).record  # a round at the cutoff: not read
    before = world.labels.filter(pl.col("date") < CUTOFF).get_column("date").max()
    future = pl.col("date") >= CUTOFF
    cheat = curriculum_of(
        world,
        [*records, october],
        tampered(world.features, future),
        tampered(world.labels, future | (pl.col("date") == before)),
    )
    assert cheat.scenarios.equals(honest.scenarios)
    assert cheat.bins.equals(honest.bins) and cheat.by_regime.equals(honest.by_regime)
    rows = pl.DataFrame({"date": known_labels(world.labels, CUTOFF).get_column("date")})
    rows = rows.filter(pl.col("date") >= honest.scenarios.get_column("first").min())
    assert np.array_equal(cheat.row_weights(rows), honest.row_weights(rows))

    known_day = known_labels(world.labels, CUTOFF).get_column("date").max()
    changed = curriculum_of(
        world, records, labels=tampered(world.labels, pl.col("date") == known_day)
    )
    assert not changed.scenarios.equals(honest.scenarios), "a label known before R must count"


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_uniform_weights_train_exactly_todays_model(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    today = train(fit, valid, settings.training, CheckpointStore(tmp_path, "plain"))
    for value in (1.0, 2.5):
        uniform = fit.with_weights(np.full(len(fit), value))
        again = train(uniform, valid, settings.training, CheckpointStore(tmp_path, f"u{value}"))
        assert same_weights(today.module.state_dict(), again.module.state_dict()), value
        assert [r.train_loss for r in again.history] == [r.train_loss for r in today.history]


def test_non_uniform_weights_change_the_model_and_repeat_exactly(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    today = train(fit, valid, settings.training, CheckpointStore(tmp_path, "plain"))
    ramp = fit.with_weights(np.linspace(1.0, 3.0, len(fit)))
    assert ramp.weights is not None and ramp.weights.mean() == pytest.approx(1.0)
    one = train(ramp, valid, settings.training, CheckpointStore(tmp_path, "a"))
    two = train(ramp, valid, settings.training, CheckpointStore(tmp_path, "b"))
    assert not same_weights(today.module.state_dict(), one.module.state_dict())
    assert same_weights(one.module.state_dict(), two.module.state_dict())


def test_the_weighted_loss_by_hand():
    prediction = torch.tensor([[1.0, 1.0], [3.0, 5.0]])
    target = torch.zeros(2, 2)
    # rows' squared errors averaged over labels: 1 and 17; weighted 0.5 and 1.5, mean over 2
    loss = _batch_loss(prediction, target, torch.tensor([0.5, 1.5]))
    assert loss.item() == pytest.approx((0.5 * 1 + 1.5 * 17) / 2)
    assert _batch_loss(prediction, target, None).item() == pytest.approx(36 / 4)


def test_sample_weights_are_checked(trained_world):
    fit, _ = load_data(trained_world["settings"])
    with pytest.raises(TrainingDataError, match="one weight per row"):
        fit.with_weights(np.ones(len(fit) - 1))
    for bad in (0.0, -1.0, np.nan, np.inf):
        weights = np.ones(len(fit))
        weights[3] = bad
        with pytest.raises(TrainingDataError, match="finite and positive"):
            fit.with_weights(weights)
    assert fit.with_weights(np.full(len(fit), 4.0)).weights is None
    halves = fit.with_weights(np.r_[np.ones(10), np.full(len(fit) - 10, 3.0)])
    assert halves.rows(slice(0, 10)).weights.tolist() == pytest.approx(  # type: ignore[union-attr]
        [len(fit) / (10 + 3 * (len(fit) - 10))] * 10
    )


def test_a_round_trains_on_the_curriculums_weights(walked):
    world, records = walked
    context = world.context()
    window = month("2016-10-01")
    weighted = curriculum_of(world, records)
    uniform = curriculum_of(world, records, min_error_days=10_000)
    assert weighted.reason is None and uniform.reason is not None
    plain = run_round(context, window, records[-1], world.features, world.labels, CUTOFF)
    flat = run_round(context, window, records[-1], world.features, world.labels, CUTOFF, uniform)
    assert not flat.record.trained and flat.record.duplicate_of == plain.record.challenger
    assert flat.record.training_id == plain.record.training_id
    taught = run_round(context, window, records[-1], world.features, world.labels, CUTOFF, weighted)
    assert taught.record.trained and taught.record.training_id != plain.record.training_id
    run = world.registry.client.get_run(
        str(world.registry.version(taught.record.challenger).run_id)
    )
    assert run.data.params["sample_weights"].startswith("curriculum (min 0.")
    plain_run = world.registry.client.get_run(
        str(world.registry.version(plain.record.challenger).run_id)
    )
    assert plain_run.data.params["sample_weights"] == "uniform"
    assert not same_weights(
        plain.challenger_module.state_dict(), taught.challenger_module.state_dict()
    )


def test_a_weighted_challenger_keeps_its_uniform_twin_which_is_the_plain_training(walked):
    """The twin is the same training without the weights: bit for bit the challenger a
    uniform round trains (separate checkpoint folders, so neither resumes the other)."""
    world, records = walked
    window, registry = month("2016-10-01"), world.registry
    weighted = curriculum_of(world, records)
    taught = run_round(
        world.context(checkpoints_root=world.tmp / "taught"),
        window,
        records[-1],
        world.features,
        world.labels,
        CUTOFF,
        weighted,
    ).record
    plain = run_round(
        world.context(checkpoints_root=world.tmp / "plain"),
        window,
        records[-1],
        world.features,
        world.labels,
        CUTOFF,
    )
    assert plain.record.trained and plain.record.challenger != taught.challenger
    taught_tags = VersionTags.of(registry.version(taught.challenger))
    plain_tags = VersionTags.of(registry.version(plain.record.challenger))
    assert (taught_tags.curriculum_weighted, taught_tags.uniform_twin) == (True, True)
    assert (plain_tags.curriculum_weighted, plain_tags.uniform_twin) == (False, False)
    twin = registry.load_uniform_twin(taught.challenger)
    assert same_weights(twin.state_dict(), plain.challenger_module.state_dict())
    assert not same_weights(twin.state_dict(), registry.load(taught.challenger).state_dict())
    with pytest.raises(ModelFileError, match="uniform-weight twin of version"):
        registry.load_uniform_twin(plain.record.challenger)


def taught_october(world: RoundWorld, records: list[RoundRecord], **context: object) -> RoundRecord:
    """October's round trained on its curriculum's weights, after July to September."""
    return run_round(
        world.context(**context),
        month("2016-10-01"),
        records[-1],
        world.features,
        world.labels,
        CUTOFF,
        curriculum_of(world, records),
    ).record


def test_the_twin_is_not_trained_when_switched_off(walked):
    world, records = walked
    taught = taught_october(world, records, uniform_twin=False)
    tags = VersionTags.of(world.registry.version(taught.challenger))
    assert (tags.curriculum_weighted, tags.uniform_twin) == (True, False)
    day = date(2016, 10, 10)
    lookup = ServiceLookup(world.registry, ModelCache(world.registry))
    assert lookup.challenger(day) is not None and lookup.uniform_twin(day) is None


def test_the_service_lookup_gives_the_twin_of_the_days_challenger(walked):
    world, records = walked
    taught = taught_october(world, records)
    lookup = ServiceLookup(world.registry, ModelCache(world.registry))
    twin = lookup.uniform_twin(date(2016, 10, 10))
    assert twin is not None and twin.version == taught.challenger and twin.cutoff == CUTOFF
    expected = world.registry.load_uniform_twin(taught.challenger)
    assert same_weights(twin.module.state_dict(), expected.state_dict())
    september = lookup.uniform_twin(date(2016, 9, 15))  # September's challenger: uniform weights
    assert september is not None and september.version == records[-1].challenger
    assert same_weights(
        september.module.state_dict(), world.registry.load(records[-1].challenger).state_dict()
    )
