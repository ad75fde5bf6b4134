"""Models and checkpoints load as data only: a planted pickle is refused, never executed.

Each malicious file is first shown to be live (unpickled the unsafe way in a separate
process, it creates its marker file), so a loader that did execute it would fail the test.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from pulse_assets.config import ModelConfig
from pulse_assets.training.checkpoints import CheckpointError, CheckpointStore
from pulse_assets.training.dataset import Scaler
from pulse_assets.training.model_files import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    read_model,
    write_model,
)
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.trainer import forecast, train
from pulse_assets_tests.training.payload import Payload, is_live
from pulse_assets_tests.training.train_worker import load_data


def module_of(kind: str, n_features: int = 4, n_outputs: int = 2) -> ForecastModule:
    rng = np.random.default_rng(5)
    architecture = ModelConfig(kind=kind, hidden_sizes=[6, 3], lookback_rows=3, num_layers=2)
    x = rng.normal(3, 2, size=(50, n_features)).astype(np.float32)
    y = rng.normal(-1, 0.5, size=(50, n_outputs)).astype(np.float32)
    return ForecastModule(
        architecture,
        Scaler.fit(x),
        Scaler.fit(y),
        tuple(f"f{k}" for k in range(n_features)),
        tuple(f"l{k}" for k in range(n_outputs)),
    ).eval()


@pytest.mark.parametrize("kind", ["mlp", "gru", "lstm"])
def test_a_model_round_trips_through_weights_and_a_json_card(tmp_path, kind):
    module = module_of(kind)
    written = write_model(module, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    assert written == [tmp_path / CARD_FILE, tmp_path / WEIGHTS_FILE]
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert card["architecture"]["kind"] == kind and card["n_features"] == 4
    assert card["lookback_rows"] == (0 if kind == "mlp" else 3)
    assert card["feature_names"] == ["f0", "f1", "f2", "f3"] and card["label_names"] == ["l0", "l1"]
    assert card["x_scaler"]["mean"] == module.x_mean.tolist()

    loaded = read_model(tmp_path, "test model")
    original, again = module.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    assert loaded.architecture == module.architecture and not loaded.training
    features = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    assert np.array_equal(forecast(loaded, features), forecast(module, features))


def test_a_pickle_where_the_weights_should_be_is_refused_not_run(tmp_path):
    folder, marker = tmp_path / "model", tmp_path / "marker"
    write_model(module_of("gru"), folder)
    for name, writer in {
        "pickle": lambda path: path.write_bytes(pickle.dumps({"w": Payload(marker)})),
        "torch": lambda path: torch.save({"w": Payload(marker)}, path),
    }.items():
        writer(folder / WEIGHTS_FILE)
        assert is_live(folder / WEIGHTS_FILE, marker, name), f"the {name} payload is not live"
        with pytest.raises(ModelFileError, match=r"weights\.safetensors is not a safetensors file"):
            read_model(folder, "planted model")
        assert not marker.exists(), f"loading ran the {name} payload"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["architecture"].update(kind="os.system"), r"architecture\.kind"),
        (lambda c: c.update(extra="x"), r"extra: Extra inputs are not permitted"),
        (lambda c: c["x_scaler"]["mean"].pop(), r"lengths \{'x_scaler\.mean': 3\} disagree"),
        (lambda c: c["architecture"].update(hidden_sizes=[7]), r"does not fit the architecture"),
        (lambda c: c.update(format="pickle"), r"format: Input should be"),
    ],
)
def test_a_tampered_card_is_refused_naming_the_key(tmp_path, change, message):
    write_model(module_of("gru"), tmp_path)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    change(card)
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match=message):
        read_model(tmp_path, "tampered model")


def test_a_card_that_is_not_json_is_refused(tmp_path):
    write_model(module_of("mlp"), tmp_path)
    (tmp_path / CARD_FILE).write_bytes(pickle.dumps({"not": "json"}))
    with pytest.raises(ModelFileError, match=r"model\.json is not readable JSON"):
        read_model(tmp_path, "garbled model")


def test_a_pickled_checkpoint_is_refused_not_run(tmp_path, trained_world):
    marker = tmp_path / "marker"
    store = CheckpointStore(tmp_path, "planted")
    store.folder.mkdir()
    planted = store.folder / "epoch-00003.pt"
    torch.save({"epoch": 3, "model": Payload(marker)}, planted)
    assert is_live(planted, marker, "torch"), "the payload is not live"
    with pytest.raises(
        CheckpointError, match=r"holds objects other than tensors.*Delete the folder"
    ):
        store.latest()
    assert not marker.exists()

    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    with pytest.raises(CheckpointError, match=r"epoch-00003\.pt holds objects other than"):
        train(fit, valid, settings.training, store)
    assert not marker.exists()


def test_damaged_checkpoints_say_what_to_do(tmp_path):
    store = CheckpointStore(tmp_path, "damaged")
    store.save(1, {"epoch": 1})
    store.save(2, {"epoch": 2})
    (store.folder / "epoch-00002.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"epoch-00002\.pt cannot be read: .*delete it to"):
        store.latest()
    (store.folder / "epoch-00002.pt").unlink()
    assert store.latest() == {"epoch": 1}
    torch.save([1, 2], store.folder / "epoch-00003.pt")
    with pytest.raises(CheckpointError, match=r"holds a list, not a training state"):
        store.latest()


def test_a_checkpoint_of_another_trainer_is_refused(tmp_path, trained_world):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    store = CheckpointStore(tmp_path, "old")
    store.save(2, {"epoch": 2, "model": {}})
    with pytest.raises(CheckpointError, match=r"lacks \['bad_epochs', 'best_epoch'.*delete its"):
        train(fit, valid, settings.training, store)


def test_checkpoints_hold_plain_types_even_with_loss_anomalies(tmp_path, trained_world):
    """An anomaly score used to be a numpy scalar, which weights_only refuses to load."""
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    raw = settings.training.model_dump()
    raw["monitor"] = {"method": "z-score", "threshold": 1e-9, "window": 3}
    config = type(settings.training).model_validate(raw)
    store = CheckpointStore(tmp_path, "anomalies")
    result = train(fit, valid, config, store)
    assert result.anomalies, "no anomaly was recorded: the test proves nothing"
    state = store.latest()
    scores = [r["anomaly_score"] for r in state["history"] if r["anomaly_score"] is not None]
    assert scores and all(type(s) is float for s in scores)
    again = train(fit, valid, config, store)
    assert again.resumed_from == result.history[-1].epoch


def test_temp_files_of_a_killed_write_are_removed_when_training_starts(tmp_path, trained_world):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    store = CheckpointStore(tmp_path, "partial")
    store.folder.mkdir()
    leftover = store.folder / ".epoch-abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train(fit, valid, settings.training, store)
    assert not leftover.exists()
    assert not [p for p in store.folder.iterdir() if p.suffix == ".tmp"]
