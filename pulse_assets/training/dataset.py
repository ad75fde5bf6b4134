"""Training data: features joined with labels, checked, split by time, never shuffled across it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from pulse_assets.errors import PulseError
from pulse_assets.features.pipeline import LABEL_PREFIX, feature_columns


class TrainingDataError(PulseError):
    """The training data cannot train a model: what is wrong and with which columns or counts."""


@dataclass(frozen=True)
class Dataset:
    """Rows in time order. ``weights``: each row's weight in the training loss (mean 1), or
    None for the plain mean; equal weights are the plain mean too (see :meth:`with_weights`)."""

    dates: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    label_names: tuple[str, ...]
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dates)

    def rows(self, selection: slice) -> Dataset:
        return Dataset(
            self.dates[selection],
            self.features[selection],
            self.labels[selection],
            self.feature_names,
            self.label_names,
            None if self.weights is None else self.weights[selection],
        )

    def with_weights(self, weights: np.ndarray) -> Dataset:
        """These rows with per-row loss weights, checked (one per row, finite, positive) and
        scaled to mean 1. Equal weights are stored as None: the same arithmetic as no weights,
        so a uniform curriculum trains exactly the unweighted model."""
        values = np.asarray(weights, dtype=np.float64)
        if values.shape != (len(self),):
            raise TrainingDataError(
                f"{values.shape} sample weights for {len(self)} rows: give one weight per row"
            )
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise TrainingDataError(
                "sample weights must be finite and positive; the curriculum gave "
                f"min {values.min()!r}, max {values.max()!r}"
            )
        uniform = values.size == 0 or np.ptp(values) == 0
        return replace(self, weights=None if uniform else values / values.mean())


def _non_finite_columns(frame: pl.DataFrame, columns: list[str]) -> list[str]:
    counts = frame.select(
        (~pl.col(c).cast(pl.Float64).is_finite()).fill_null(True).sum() for c in columns
    )
    return [c for c, n in counts.row(0, named=True).items() if n]


def assemble(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    label_names: list[str],
    feature_names: list[str] | None = None,
) -> Dataset:
    """Join on date; rows whose labels are not known yet (the latest day) are left out."""
    label_columns = [LABEL_PREFIX + name for name in label_names]
    missing = [c for c in label_columns if c not in labels.columns]
    if missing:
        available = [c for c in labels.columns if c.startswith(LABEL_PREFIX)]
        raise TrainingDataError(
            f"label column(s) {missing} missing from daily_labels (it has {available}); "
            "add them to features.labels in configs/ and re-materialize the labels"
        )
    names = feature_names or feature_columns(features)
    absent = [c for c in names if c not in features.columns]
    if absent:
        raise TrainingDataError(
            f"feature column(s) {absent} missing from daily_features; fix training.features"
        )
    joined = features.select("date", *names).join(
        labels.select("date", *label_columns), on="date", how="inner"
    )
    joined = joined.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in label_columns)).sort(
        "date"
    )
    bad = _non_finite_columns(joined, [*names, *label_columns])
    if bad:
        raise TrainingDataError(
            f"training data holds NaN/inf in column(s) {bad}; "
            "fix the feature pipeline or the source before training"
        )
    return Dataset(
        dates=joined.get_column("date").to_numpy(),
        features=joined.select(names).to_numpy().astype(np.float32),
        labels=joined.select(label_columns).to_numpy().astype(np.float32),
        feature_names=tuple(names),
        label_names=tuple(label_names),
    )


def chronological_split(
    data: Dataset, validation_share: float, min_rows: int
) -> tuple[Dataset, Dataset]:
    """Earlier rows train, the latest ``validation_share`` validate: no future in training."""
    if len(data) < min_rows:
        raise TrainingDataError(
            f"too few rows to train: {len(data)} with known labels, at least {min_rows} needed "
            "(materialize more feature partitions or lower training.min_rows)"
        )
    cut = int(round(len(data) * (1 - validation_share)))
    cut = min(max(cut, 1), len(data) - 1)
    return data.rows(slice(0, cut)), data.rows(slice(cut, None))


@dataclass(frozen=True)
class Scaler:
    """Standardization fitted on training rows only; a constant column is left unscaled."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(axis=0)
        return cls(
            mean=values.mean(axis=0).astype(np.float32),
            std=np.where(std > 0, std, 1.0).astype(np.float32),
        )


def sequences(values: np.ndarray, lookback: int) -> np.ndarray:
    """Windows of the ``lookback`` rows ending at each row from ``lookback-1`` on: (n-l+1, l, f)."""
    if len(values) < lookback:
        raise TrainingDataError(
            f"{len(values)} rows are fewer than the model's lookback of {lookback} rows"
        )
    windows = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))
