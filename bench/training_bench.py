"""Training throughput (samples/s): our trainer against a DataLoader loop, on real features.

Data: the embedded real sources (2012-2016) through the feature pipeline. Ours keeps the
whole training set as tensors on the device and draws batches by index from a seeded
permutation; the baseline is the plan's train_model shape: a torch DataLoader over a
TensorDataset with shuffle=True, same model, optimizer, batch size and epochs.
Runs on CUDA too when one is visible (``--device cuda``).

    python bench/training_bench.py [--epochs 10] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb  # noqa: E402


def dataloader_samples_per_second(fit, valid, config, device) -> float:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pulse_assets.training.dataset import Scaler, sequences
    from pulse_assets.training.models import ForecastModule

    lookback = config.model.lookback_rows if config.model.kind != "mlp" else 0
    x = sequences(fit.features, lookback) if lookback else fit.features
    y = fit.labels[lookback - 1 :] if lookback else fit.labels
    torch.manual_seed(config.optimizer.seed)
    module = ForecastModule(
        config.model,
        Scaler.fit(fit.features),
        Scaler.fit(fit.labels),
        fit.feature_names,
        fit.label_names,
    ).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.optimizer.learning_rate)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=config.optimizer.batch_size,
        shuffle=True,
    )
    started, seen = time.perf_counter(), 0
    for _ in range(config.optimizer.epochs):
        module.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = nn.functional.mse_loss(module.scaled(xb), (yb - module.y_mean) / module.y_std)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(xb)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    from pulse_assets.config import Settings, TrainingConfig
    from pulse_assets.storage import PartitionStore
    from pulse_assets.training.checkpoints import CheckpointStore
    from pulse_assets.training.dataset import assemble, chronological_split
    from pulse_assets.training.trainer import resolve_device, train
    from pulse_assets_tests.conftest import populate_store, small_config

    home = Path(tempfile.mkdtemp())
    settings = Settings.model_validate(
        small_config(
            home, partitions={"start": "2012-01-01", "end": "2017-01-01", "timezone": "UTC"}
        )
    )
    populate_store(settings, date(2012, 1, 1), date(2016, 12, 31))
    store = PartitionStore(settings.store.root)
    data = assemble(
        store.read_range("features/daily_features", "2012-01-01", "2016-12-31"),
        store.read_range("features/daily_labels", "2012-01-01", "2016-12-31"),
        ["sp500_abs_return_next"],
    )
    fit, valid = chronological_split(data, 0.2, 100)
    device = resolve_device(args.device)
    print(
        f"training throughput on {device} ({len(fit)} real training rows, {fit.features.shape[1]} features, "
        f"{args.epochs} epochs, batch 64)"
    )
    for kind, model in (
        ("mlp", {"kind": "mlp", "hidden_sizes": [64, 32], "dropout": 0.1}),
        ("gru", {"kind": "gru", "hidden_sizes": [32], "dropout": 0.1, "lookback_rows": 20}),
    ):
        config = TrainingConfig.model_validate(
            {
                "labels": ["sp500_abs_return_next"],
                "device": args.device,
                "model": model,
                "optimizer": {"epochs": args.epochs, "patience": args.epochs, "batch_size": 64},
            }
        )
        ours = train(fit, valid, config, CheckpointStore(home / "ck", kind)).samples_per_second
        baseline = dataloader_samples_per_second(fit, valid, config, device)
        print(
            f"  {kind}: ours {ours:,.0f} samples/s (with per-epoch validation and checkpoints), "
            f"DataLoader loop {baseline:,.0f} samples/s: {ours / baseline:.1f}x"
        )
    print(f"peak memory of this process: {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
