"""The model factory (the plan's ``create_model``) and the self-contained forecast module.

``ForecastModule`` carries its architecture, names and scalers (as buffers), so it takes raw
feature rows (or windows of rows) and returns forecasts in label units, and
``training/model_files.py`` can store it as data only: weights plus a JSON card from which
this factory rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from pulse_assets.config import ModelConfig
from pulse_assets.training.dataset import Scaler


class MLP(nn.Module):
    def __init__(
        self, n_features: int, n_outputs: int, hidden_sizes: list[int], dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Recurrent(nn.Module):
    """GRU or LSTM over a window of feature rows; the last step's state forecasts."""

    def __init__(
        self, kind: str, n_features: int, n_outputs: int, hidden: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        cell = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = cell(
            n_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x)
        return self.head(output[:, -1, :])


def create_model(config: ModelConfig, n_features: int, n_outputs: int) -> nn.Module:
    if config.kind == "mlp":
        return MLP(n_features, n_outputs, config.hidden_sizes, config.dropout)
    return Recurrent(
        config.kind,
        n_features,
        n_outputs,
        config.hidden_sizes[0],
        config.num_layers,
        config.dropout,
    )


INPUT_CLIP = 5.0


class ForecastModule(nn.Module):
    """Scale inputs, run the core network, unscale outputs.

    Standardized inputs are clipped to +-INPUT_CLIP: a feature that barely moved during
    training (poll margins before a campaign) would otherwise reach the network as a value
    of hundreds of standard deviations once it starts moving.
    """

    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(
        self,
        architecture: ModelConfig,
        x_scaler: Scaler,
        y_scaler: Scaler,
        feature_names: tuple[str, ...],
        label_names: tuple[str, ...],
    ) -> None:
        """The core network comes from ``create_model(architecture, ...)``, sized by the names."""
        super().__init__()
        self.architecture = architecture
        self.core = create_model(architecture, len(feature_names), len(label_names))
        self.feature_names = tuple(feature_names)
        self.label_names = tuple(label_names)
        self.register_buffer("x_mean", torch.from_numpy(x_scaler.mean))
        self.register_buffer("x_std", torch.from_numpy(x_scaler.std))
        self.register_buffer("y_mean", torch.from_numpy(y_scaler.mean))
        self.register_buffer("y_std", torch.from_numpy(y_scaler.std))

    @property
    def lookback_rows(self) -> int:
        """0 for a model of one row, else the window of rows a recurrent core reads."""
        return self.architecture.input_window or 0

    def scalers(self) -> tuple[Scaler, Scaler]:
        """The input and label scalers fitted on the training rows."""
        return (
            Scaler(self.x_mean.cpu().numpy(), self.x_std.cpu().numpy()),
            Scaler(self.y_mean.cpu().numpy(), self.y_std.cpu().numpy()),
        )

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Forecasts in scaled label units: what the training loss compares."""
        return self.core(((x - self.x_mean) / self.x_std).clamp(-INPUT_CLIP, INPUT_CLIP))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled(x) * self.y_std + self.y_mean
