"""Training on real features: determinism, crash and resume, NaN recovery, the monitor."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pulse_assets.config import MonitorConfig, Settings, TrainingConfig
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import Dataset
from pulse_assets.training.monitor import LossMonitor, anomaly_score
from pulse_assets.training.trainer import TrainingError, forecast, resolve_device, train
from pulse_assets_tests.training.train_worker import load_data


def config_with(settings: Settings, **changes) -> TrainingConfig:
    raw = settings.training.model_dump()
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            raw[section][key] = value
        else:
            raw[section] = value
    return TrainingConfig.model_validate(raw)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_data_and_config_give_the_same_weights(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    one = train(fit, valid, settings.training, CheckpointStore(tmp_path, "a"))
    two = train(fit, valid, settings.training, CheckpointStore(tmp_path, "b"))
    assert same_weights(one.module.state_dict(), two.module.state_dict())
    assert [r.val_loss for r in one.history] == [r.val_loss for r in two.history]
    assert one.device == "cpu" and one.samples_per_second > 0
    assert one.module.feature_names == fit.feature_names


def test_a_killed_training_resumes_from_its_checkpoint_to_the_same_weights(trained_world, tmp_path):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(trained_world["raw"], default=str))
    worker = [
        sys.executable,
        "-m",
        "pulse_assets_tests.training.train_worker",
        "--settings",
        str(settings_file),
    ]
    whole = subprocess.run(
        [
            *worker,
            "--checkpoints",
            str(tmp_path / "whole"),
            "--weights-out",
            str(tmp_path / "whole.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.run(
        [*worker, "--checkpoints", str(tmp_path / "killed"), "--kill-at-epoch", "3"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL
    store = CheckpointStore(tmp_path / "killed", "run")
    assert store.epochs()[-1] == 3
    resumed = subprocess.run(
        [
            *worker,
            "--checkpoints",
            str(tmp_path / "killed"),
            "--weights-out",
            str(tmp_path / "resumed.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "resumed.pt"))


def test_checkpoints_keep_the_latest_k_and_leave_no_temp_files(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    config = config_with(settings, recovery__keep_checkpoints=2, optimizer__patience=50)
    store = CheckpointStore(tmp_path, "k", keep=2)
    train(fit, valid, config, store)
    assert store.epochs() == [config.optimizer.epochs - 1, config.optimizer.epochs]
    assert sorted(p.name for p in store.folder.iterdir()) == ["epoch-00005.pt", "epoch-00006.pt"]
    latest = store.latest()
    assert {"model", "optimizer", "epoch", "history", "generator", "torch_rng"} <= latest.keys()


def test_a_diverging_loss_restores_and_retries_with_a_lower_learning_rate(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    config = config_with(
        settings,
        optimizer__name="sgd",
        optimizer__learning_rate=5e5,
        recovery__lr_factor=1e-6,
        recovery__max_retries=3,
    )
    messages = []
    result = train(fit, valid, config, CheckpointStore(tmp_path, "nan"), log=messages.append)
    assert result.recoveries and "lowered the learning rate" in result.recoveries[0]
    assert result.history[-1].learning_rate < 5e5
    assert all(np.isfinite(r.train_loss) for r in result.history)


def test_a_loss_that_stays_non_finite_fails_naming_the_epoch(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    poisoned = Dataset(
        fit.dates, fit.features, np.full_like(fit.labels, 3e38), fit.feature_names, fit.label_names
    )
    config = config_with(settings, recovery__max_retries=2)
    with pytest.raises(
        TrainingError, match=r"training loss became (inf|nan) at epoch 1, batch \d+; 2 retries"
    ):
        train(poisoned, valid, config, CheckpointStore(tmp_path, "bad"))


def test_recurrent_forecasts_need_a_full_window(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    result = train(fit, valid, settings.training, CheckpointStore(tmp_path, "f"))
    made = forecast(result.module, valid.features)
    assert made.shape == (len(valid) - settings.training.model.lookback_rows + 1, 1)


def test_mlp_trains_on_single_rows(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    config = config_with(settings, model={"kind": "mlp", "hidden_sizes": [16, 8], "dropout": 0.1})
    result = train(fit, valid, config, CheckpointStore(tmp_path, "mlp"))
    assert forecast(result.module, valid.features).shape == (len(valid), 1)


def test_monitor_flags_a_loss_far_from_recent_epochs():
    assert anomaly_score(1.0, [1.0, 1.1], "z-score") is None
    assert anomaly_score(5.0, [1.0, 1.1, 0.9, 1.0], "z-score") > 3
    assert anomaly_score(1.0, [1.0, 1.1, 0.9, 1.0], "iqr") == 0.0
    monitor = LossMonitor(MonitorConfig(method="iqr", threshold=1.5, window=5))
    assert monitor.observe(5, 9.0, [1.0, 1.2, 0.8, 1.1]) is not None
    assert monitor.observe(6, 1.05, [1.0, 1.2, 0.8, 1.1]) is None
    assert len(monitor.anomalies) == 1


def test_device_auto_is_cpu_here_and_cuda_is_refused_without_one():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device"):
            resolve_device("cuda")


def test_training_data_problems_are_named(trained_world):
    from pulse_assets.storage import PartitionStore
    from pulse_assets.training.dataset import TrainingDataError, assemble, chronological_split

    store = PartitionStore(trained_world["settings"].store.root)
    features = store.read_range("features/daily_features", "2016-01-01", "2016-12-31")
    labels = store.read_range("features/daily_labels", "2016-01-01", "2016-12-31")
    with pytest.raises(TrainingDataError, match=r"label column\(s\) \['label_missing'\] missing"):
        assemble(features, labels, ["missing"])
    broken = features.with_columns(
        features["sp500_close_ma_gap_10"].set(features["date"] == features["date"][3], float("inf"))
    )
    with pytest.raises(
        TrainingDataError, match=r"NaN/inf in column\(s\) \['sp500_close_ma_gap_10'\]"
    ):
        assemble(broken, labels, ["sp500_abs_return_next"])
    data = assemble(features, labels, ["sp500_abs_return_next"])
    with pytest.raises(
        TrainingDataError,
        match=rf"too few rows to train: {len(data)} with known labels, at least 5000",
    ):
        chronological_split(data, 0.2, 5000)
    fit, valid = chronological_split(data, 0.25, 10)
    assert fit.dates.max() < valid.dates.min()
    assert len(valid) == round(len(data) * 0.25)


def test_settings_json_round_trip_used_by_the_worker(trained_world):
    raw = json.loads(json.dumps(trained_world["raw"], default=str))
    assert Settings.model_validate(raw) == trained_world["settings"]
    assert Path(trained_world["settings"].store.root).exists()


def test_lstm_trains_and_scalers_come_from_training_rows_only(trained_world, tmp_path):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    config = config_with(
        settings, model={"kind": "lstm", "hidden_sizes": [8], "lookback_rows": 4, "num_layers": 2}
    )
    result = train(fit, valid, config, CheckpointStore(tmp_path, "lstm"))
    assert forecast(result.module, valid.features).shape == (len(valid) - 3, 1)
    assert np.allclose(
        result.module.x_mean.numpy(), fit.features.mean(axis=0), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(
        result.module.x_mean.numpy(), np.concatenate([fit.features, valid.features]).mean(axis=0)
    )
