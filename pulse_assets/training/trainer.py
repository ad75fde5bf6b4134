"""Deterministic, resumable training with NaN recovery and a loss monitor.

Determinism: fixed seeds, deterministic algorithms, batch order from a seeded generator
whose state is checkpointed with the model, the optimizer and torch's RNGs (dropout). So a
run killed anywhere (mid-epoch, mid-write) and resumed from its latest checkpoint replays
the lost work and ends with the same weights as one that was never interrupted. Validation
rows come after training rows in time; batches are shuffled within the training period only.

A checkpoint holds tensors, numbers, strings and plain containers only, so it loads with
``torch.load(weights_only=True)`` (see ``checkpoints.py``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse_assets.config import TrainingConfig
from pulse_assets.errors import PulseError, TrainingDivergedError
from pulse_assets.training.checkpoints import CheckpointError, CheckpointStore
from pulse_assets.training.dataset import Dataset, Scaler, sequences
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.monitor import LossMonitor


class TrainingError(PulseError):
    """Training could not produce a model; says what happened at which epoch."""


class LossDivergedError(TrainingError, TrainingDivergedError):
    """The loss stayed non-finite after every recovery from the last good checkpoint."""


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    learning_rate: float
    anomaly_score: float | None = None


@dataclass
class TrainResult:
    module: ForecastModule
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    resumed_from: int | None
    device: str
    samples_per_second: float
    recoveries: list[str] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_val_loss(self) -> float:
        """The validation loss of the epoch whose weights were kept (NaN with no epoch run)."""
        return min((r.val_loss for r in self.history), default=math.nan)


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "training.device is cuda but no CUDA device is visible; use auto or cpu"
        )
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def training_id(data_fingerprint: str, config: TrainingConfig) -> str:
    """Same inputs and config, same id: a re-executed run finds its own checkpoints."""
    digest = hashlib.sha256(f"{data_fingerprint}|{config.model_dump_json()}".encode())
    return digest.hexdigest()[:16]


def _inputs(
    train: Dataset, valid: Dataset, lookback: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Model inputs and labels for train+valid rows; returns the index where validation starts."""
    features = np.concatenate([train.features, valid.features])
    labels = np.concatenate([train.labels, valid.labels])
    if lookback is None:
        return features, labels, len(train)
    windows = sequences(features, lookback)
    return windows, labels[lookback - 1 :], len(train) - (lookback - 1)


def _fit_weights(train: Dataset, lookback: int | None) -> np.ndarray | None:
    """Loss weights of the training inputs (a recurrent model's first ``lookback-1`` rows only
    start windows), mean 1; None for the plain mean (no weights, or equal ones)."""
    if train.weights is None:
        return None
    weights = train.weights if lookback is None else train.weights[lookback - 1 :]
    if weights.size == 0 or np.ptp(weights) == 0:
        return None
    return (weights / weights.mean()).astype(np.float32)


def _seed_everything(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


STATE_KEYS = frozenset(
    {
        "epoch",
        "model",
        "optimizer",
        "best_val",
        "best_epoch",
        "best_state",
        "bad_epochs",
        "stopped",
        "history",
        "generator",
        "torch_rng",
    }
)


class _Run:
    """The mutable state of one training: everything a checkpoint must hold."""

    def __init__(self, module: ForecastModule, config: TrainingConfig) -> None:
        opt = config.optimizer
        self.module = module
        self.optimizer: torch.optim.Optimizer
        if opt.name == "adamw":
            self.optimizer = torch.optim.AdamW(
                module.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                module.parameters(),
                lr=opt.learning_rate,
                momentum=0.9,
                weight_decay=opt.weight_decay,
            )
        self.generator = torch.Generator().manual_seed(opt.seed)
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state = copy.deepcopy(module.state_dict())
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[EpochRecord] = []

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "history": [asdict(record) for record in self.history],
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def restore(self, state: dict[str, Any], where: str) -> None:
        missing = sorted(STATE_KEYS - state.keys())
        if missing:
            raise CheckpointError(
                f"checkpoint {where} lacks {missing}: it was written by another version of "
                "the trainer; delete its folder to start this training over"
            )
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best_val, self.best_epoch = (
            state["epoch"],
            state["best_val"],
            state["best_epoch"],
        )
        self.best_state, self.bad_epochs, self.stopped = (
            state["best_state"],
            state["bad_epochs"],
            state["stopped"],
        )
        self.history = [EpochRecord(**record) for record in state["history"]]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _batch_loss(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Mean squared error of a batch; with weights, each row's squared error (averaged over
    labels) times its weight, averaged over the batch. Weights have mean 1 over the fit rows,
    so the weighted loss is on the scale of the plain one."""
    if weights is None:
        return nn.functional.mse_loss(prediction, target)
    per_row = ((prediction - target) ** 2).mean(dim=1)
    return (weights * per_row).mean()


def _train_epoch(
    run: _Run,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
) -> tuple[float, int | None]:
    """Mean training loss, and the first batch whose loss was not finite (None if all were)."""
    run.module.train()
    order = torch.randperm(len(x), generator=run.generator).to(x.device)
    total, count = 0.0, 0
    for batch, start in enumerate(range(0, len(x), batch_size)):
        index = order[start : start + batch_size]
        target = (y[index] - run.module.y_mean) / run.module.y_std
        loss = _batch_loss(
            run.module.scaled(x[index]), target, None if weights is None else weights[index]
        )
        if not torch.isfinite(loss):
            return float(loss.item()), batch
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        total += float(loss.item()) * len(index)
        count += len(index)
    return total / count, None


def _validation_loss(module: ForecastModule, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        target = (y - module.y_mean) / module.y_std
        return float(nn.functional.mse_loss(module.scaled(x), target).item())


def train(
    train_data: Dataset,
    valid_data: Dataset,
    config: TrainingConfig,
    checkpoints: CheckpointStore,
    *,
    warm_start: ForecastModule | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> TrainResult:
    """Train, or resume the training whose checkpoints are in ``checkpoints``.

    ``warm_start`` (a model of the same architecture and names, see :func:`can_warm_start`)
    is the starting point: its weights and its scalers, so training starts from exactly the
    function it computes; otherwise the weights start at random and the scalers are fitted
    on ``train_data``.

    ``train_data.weights`` (a curriculum's per-row weights), when set, weigh each fit row's
    squared error in the training loss; the validation loss stays the plain mean, so early
    stopping and the kept epoch judge every validation day alike.
    """
    device = resolve_device(config.device)
    opt = config.optimizer
    lookback = config.model.input_window
    inputs, labels, split = _inputs(train_data, valid_data, lookback)
    if split < 1 or split >= len(inputs):
        raise TrainingError(
            f"{len(train_data)} training and {len(valid_data)} validation rows leave no "
            f"window of {lookback} rows on one side; lower the lookback or add data"
        )
    _seed_everything(opt.seed)
    module = ForecastModule(
        config.model,
        Scaler.fit(train_data.features),
        Scaler.fit(train_data.labels),
        train_data.feature_names,
        train_data.label_names,
    )
    if warm_start is not None:
        problem = cannot_warm_start(warm_start, config, train_data)
        if problem:
            raise TrainingError(f"cannot warm start: {problem}")
        module.load_state_dict(warm_start.state_dict())
    module.to(device)
    run = _Run(module, config)
    x = torch.from_numpy(inputs).to(device)
    y = torch.from_numpy(labels).to(device)
    x_train, y_train, x_valid, y_valid = x[:split], y[:split], x[split:], y[split:]
    fit_weights = _fit_weights(train_data, lookback)
    w_train = None if fit_weights is None else torch.from_numpy(fit_weights).to(device)

    checkpoints.discard_partial_writes()
    latest = checkpoints.latest()
    resumed_from = None
    if latest is None:
        checkpoints.save(0, run.state())
    else:
        run.restore(latest, str(checkpoints.folder))
        resumed_from = run.epoch
        log(f"resuming training from checkpoint epoch {run.epoch} in {checkpoints.folder}")

    monitor = LossMonitor(config.monitor)
    recoveries: list[str] = []
    retries = 0
    trained_samples, started = 0, time.perf_counter()
    while not run.stopped and run.epoch < opt.epochs:
        epoch = run.epoch + 1
        train_loss, bad_batch = _train_epoch(run, x_train, y_train, opt.batch_size, w_train)
        if bad_batch is not None:
            retries += 1
            if retries > config.recovery.max_retries:
                raise LossDivergedError(
                    f"training loss became {train_loss} at epoch {epoch}, batch {bad_batch}; "
                    f"{config.recovery.max_retries} retries from the last good checkpoint with the "
                    f"learning rate lowered to {run.learning_rate:.3g} did not help. Check the "
                    "features for extreme values or lower training.optimizer.learning_rate"
                )
            lowered = run.learning_rate * config.recovery.lr_factor
            last_good = checkpoints.latest()
            if last_good is None:
                raise CheckpointError(
                    f"no checkpoint left in {checkpoints.folder} to recover from a non-finite "
                    f"loss at epoch {epoch}; was the folder removed while training ran?"
                )
            run.restore(last_good, str(checkpoints.folder))
            run.set_learning_rate(lowered)
            message = (
                f"loss {train_loss} at epoch {epoch} batch {bad_batch}: restored epoch "
                f"{run.epoch} and lowered the learning rate to {lowered:.3g} (retry {retries})"
            )
            recoveries.append(message)
            log(message)
            continue
        trained_samples += len(x_train)
        val_loss = _validation_loss(run.module, x_valid, y_valid)
        anomaly = monitor.observe(epoch, val_loss, [r.val_loss for r in run.history])
        if anomaly is not None:
            log(
                f"epoch {epoch}: validation loss {val_loss:.4g} is anomalous "
                f"({anomaly.method} score {anomaly.score:.1f} over recent epochs)"
            )
        record = EpochRecord(
            epoch, train_loss, val_loss, run.learning_rate, anomaly.score if anomaly else None
        )
        run.history.append(record)
        run.epoch = epoch
        if val_loss < run.best_val:
            run.best_val, run.best_epoch, run.bad_epochs = val_loss, epoch, 0
            run.best_state = copy.deepcopy(run.module.state_dict())
        else:
            run.bad_epochs += 1
            run.stopped = run.bad_epochs >= opt.patience
        checkpoints.save(epoch, run.state())
        if on_epoch_end is not None:
            on_epoch_end(record)
    elapsed = time.perf_counter() - started
    run.module.load_state_dict(run.best_state)
    run.module.eval()
    run.module.to("cpu")
    return TrainResult(
        module=run.module,
        history=run.history,
        best_epoch=run.best_epoch,
        stopped_early=run.stopped,
        resumed_from=resumed_from,
        device=str(device),
        samples_per_second=trained_samples / elapsed if elapsed > 0 else float("nan"),
        recoveries=recoveries,
        anomalies=[asdict(a) for a in monitor.anomalies],
    )


def cannot_warm_start(start: ForecastModule, config: TrainingConfig, data: Dataset) -> str | None:
    """Why ``start`` cannot seed a training of ``config`` on ``data``, or None when it can."""
    if start.architecture != config.model:
        return f"the architecture changed ({start.architecture} -> {config.model})"
    if start.feature_names != data.feature_names:
        changed = sorted(set(start.feature_names) ^ set(data.feature_names))
        return f"the feature columns changed ({changed or 'their order'})"
    if start.label_names != data.label_names:
        return f"the labels changed ({start.label_names} -> {data.label_names})"
    return None


def forecast(module: ForecastModule, features: np.ndarray) -> np.ndarray:
    """Forecasts for feature rows (for recurrent models: one per row from lookback-1 on)."""
    inputs = sequences(features, module.lookback_rows) if module.lookback_rows else features
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()
