"""One training round (the plan's daily DAG: prepare data, train, evaluate, register, promote,
update metrics), framework-free: the Dagster asset calls it with its resources.

Round k+1 reads what round k left: the champion in the registry is the parent of the new
version and the model it must beat on the same held-out window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pulse_assets.config import TrainingConfig
from pulse_assets.metrics.regression import metrics_with_naive
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.storage import PartitionStore, content_hash
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import Dataset, TrainingDataError, assemble, chronological_split
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.promotion import PromotionDecision, decide
from pulse_assets.training.registry import CHALLENGER, CHAMPION, ModelRegistry, TrainingRecord
from pulse_assets.training.trainer import TrainResult, forecast, train, training_id

FEATURES_TABLE, LABELS_TABLE = "features/daily_features", "features/daily_labels"


@dataclass(frozen=True)
class TrainingWindow:
    train_start: date
    train_end: date
    holdout_start: date
    holdout_end: date

    @classmethod
    def ending(cls, latest: date, config: TrainingConfig) -> TrainingWindow:
        holdout_start = latest - timedelta(days=config.holdout_days - 1)
        train_end = holdout_start - timedelta(days=1)
        return cls(
            train_end - timedelta(days=config.window_days - 1), train_end, holdout_start, latest
        )

    def partition_range(self) -> str:
        return f"{self.train_start}...{self.train_end}"


@dataclass
class TrainingOutcome:
    version: str
    parent_version: str | None
    window: TrainingWindow
    result: TrainResult
    validation: dict[str, dict[str, dict[str, float]]]
    holdout: dict[str, dict[str, dict[str, float]]]
    champion_holdout: dict[str, dict[str, dict[str, float]]] | None
    decision: PromotionDecision
    champion_version: str
    training_id: str


def latest_labelled_day(store: PartitionStore) -> date:
    keys = store.keys(LABELS_TABLE)
    if not keys:
        raise TrainingDataError(
            "no daily_labels partitions in the store; materialize raw data and features first"
        )
    return date.fromisoformat(keys[-1])


def score(
    module: ForecastModule, data: Dataset, rows: np.ndarray
) -> dict[str, dict[str, dict[str, float]]]:
    """Model and naive-persistence metrics per label over ``rows`` (a boolean mask over data).

    The naive forecast for day t is the label's value on the previous day in the data: the
    latest realized value when the forecast is made.
    """
    predictions = np.full(data.labels.shape, np.nan, dtype=np.float64)
    made = forecast(module, data.features)
    predictions[len(data) - len(made) :] = made
    naive = np.vstack([np.full((1, data.labels.shape[1]), np.nan), data.labels[:-1]])
    usable = rows & np.isfinite(predictions).all(axis=1) & np.isfinite(naive).all(axis=1)
    if not usable.any():
        raise TrainingDataError("no rows to score: the window is shorter than the model's lookback")
    return {
        name: metrics_with_naive(data.labels[usable, k], predictions[usable, k], naive[usable, k])
        for k, name in enumerate(data.label_names)
    }


def _fingerprint(features: pl.DataFrame, labels: pl.DataFrame) -> dict[str, str]:
    return {FEATURES_TABLE: content_hash(features), LABELS_TABLE: content_hash(labels)}


def _record(
    config: TrainingConfig,
    result: TrainResult,
    train_part: Dataset,
    features: pl.DataFrame,
    window: TrainingWindow,
    versions: dict[str, str],
    tags: dict[str, str],
) -> TrainingRecord:
    losses = {
        "train_loss": [(r.epoch, r.train_loss) for r in result.history],
        "val_loss": [(r.epoch, r.val_loss) for r in result.history],
        "learning_rate": [(r.epoch, r.learning_rate) for r in result.history],
    }
    params = {
        "model.kind": config.model.kind,
        "model.hidden_sizes": str(config.model.hidden_sizes),
        "model.dropout": config.model.dropout,
        "model.lookback_rows": config.model.lookback_rows,
        "optimizer": config.optimizer.name,
        "batch_size": config.optimizer.batch_size,
        "learning_rate": config.optimizer.learning_rate,
        "weight_decay": config.optimizer.weight_decay,
        "epochs": config.optimizer.epochs,
        "patience": config.optimizer.patience,
        "seed": config.optimizer.seed,
        "labels": ",".join(config.labels),
        "n_features": len(train_part.feature_names),
        "train_rows": len(train_part),
        "best_epoch": result.best_epoch,
        "device": result.device,
    }
    dataset_tags = {
        "partition_range": window.partition_range(),
        "source": FEATURES_TABLE,
        **{f"data_version.{k}": v for k, v in versions.items()},
    }
    frame = features.filter(
        pl.col("date").is_between(window.train_start, window.train_end)
    ).to_pandas()
    return TrainingRecord(
        params=params,
        losses=losses,
        dataset_frame=frame,
        dataset_name=f"daily_features[{window.partition_range()}]",
        dataset_tags=dataset_tags,
        config=config.model_dump(mode="json"),
        version_tags={
            **tags,
            "partition_range": window.partition_range(),
            "data_versions": ",".join(f"{k}={v}" for k, v in versions.items()),
            "holdout_range": f"{window.holdout_start}...{window.holdout_end}",
        },
    )


@dataclass(frozen=True)
class TrainingData:
    """One round's data: the window, every row, the training rows split by time, and the
    training id (data versions and config), under which the round's checkpoints are kept."""

    window: TrainingWindow
    features: pl.DataFrame
    data: Dataset
    in_training: np.ndarray
    train_part: Dataset
    fit: Dataset
    valid: Dataset
    versions: dict[str, str]
    identity: str


def training_data(config: TrainingConfig, store: PartitionStore) -> TrainingData:
    window = TrainingWindow.ending(latest_labelled_day(store), config)
    features = store.read_range(
        FEATURES_TABLE, window.train_start.isoformat(), window.holdout_end.isoformat()
    )
    labels = store.read_range(
        LABELS_TABLE, window.train_start.isoformat(), window.holdout_end.isoformat()
    )
    data = assemble(features, labels, config.labels, config.features)
    in_training = data.dates <= np.datetime64(window.train_end)
    train_part = data.rows(slice(0, int(in_training.sum())))
    fit, valid = chronological_split(train_part, config.validation_share, config.min_rows)
    versions = _fingerprint(features, labels)
    identity = training_id(
        hashlib.sha256(str(sorted(versions.items())).encode()).hexdigest(), config
    )
    return TrainingData(
        window, features, data, in_training, train_part, fit, valid, versions, identity
    )


def run_training(
    *,
    config: TrainingConfig,
    store: PartitionStore,
    registry: ModelRegistry,
    metrics: MetricsStore,
    checkpoints_root: Path,
    trigger: str,
    run_id: str | None,
    drifted_features: list[str] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> TrainingOutcome:
    prepared = training_data(config, store)
    window, data, in_training = prepared.window, prepared.data, prepared.in_training
    fit, train_part, identity = prepared.fit, prepared.train_part, prepared.identity
    checkpoints = CheckpointStore(checkpoints_root, identity, keep=config.recovery.keep_checkpoints)
    log(
        f"training {identity} on {window.partition_range()} "
        f"({len(fit)} rows, {len(prepared.valid)} validation)"
    )
    result = train(fit, prepared.valid, config, checkpoints, log=log)

    holdout_rows = ~in_training
    if not holdout_rows.any():
        raise TrainingDataError(
            f"no labelled rows in the holdout {window.holdout_start}..{window.holdout_end}"
        )
    validation_rows = np.zeros(len(data), dtype=bool)
    validation_rows[len(fit) : len(train_part)] = True
    validation = score(result.module, data, validation_rows)
    holdout = score(result.module, data, holdout_rows)

    champion = registry.alias(CHAMPION)
    champion_holdout = (
        score(registry.load(champion.version), data, holdout_rows) if champion else None
    )
    metric, label = config.promotion.metric, config.labels[0]
    decision = decide(
        metric,
        holdout[label]["model"][metric],
        champion_holdout[label]["model"][metric] if champion_holdout else None,
        config.promotion.min_improvement,
    )
    tags = {
        "trigger": trigger,
        "parent_version": champion.version if champion else "",
        "dagster_run_id": run_id or "",
        "training_id": identity,
    }
    if drifted_features:
        tags["drifted_features"] = ",".join(drifted_features)
    info = registry.log_training(
        _record(config, result, train_part, prepared.features, window, prepared.versions, tags),
        result.module,
    )
    actor = f"pulse-assets ({trigger})"
    registry.move_alias(
        CHALLENGER,
        info.version,
        actor=actor,
        reason=f"new version trained ({trigger})",
        figures=decision.figures,
        run_id=run_id,
    )
    if decision.promote:
        registry.move_alias(
            CHAMPION,
            info.version,
            actor=actor,
            reason=decision.reason,
            figures=decision.figures,
            run_id=run_id,
        )
    for scope, scores, version in [
        ("validation", validation, info.version),
        ("holdout", holdout, info.version),
    ]:
        first, last = (
            (window.train_start, window.train_end)
            if scope == "validation"
            else (window.holdout_start, window.holdout_end)
        )
        for name, figures in scores.items():
            rows = int(validation_rows.sum() if scope == "validation" else holdout_rows.sum())
            metrics.record(
                model_name=registry.model_name,
                model_version=version,
                scope=scope,
                window=(first, last),
                label=name,
                metrics=figures,
                rows=rows,
                run_id=run_id,
            )
    return TrainingOutcome(
        version=info.version,
        parent_version=champion.version if champion else None,
        window=window,
        result=result,
        validation=validation,
        holdout=holdout,
        champion_holdout=champion_holdout,
        decision=decision,
        champion_version=champion.version if champion and not decision.promote else info.version,
        training_id=identity,
    )
