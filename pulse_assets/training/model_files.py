"""A forecast model on disk as data only: ``weights.safetensors`` plus a JSON card.

The card holds what is not a learned weight: the architecture (kind, hidden sizes, layers,
dropout, look-back, input and output sizes), the feature and label names and the scalers.
Loading parses the JSON, rebuilds the network with the project's own factory
(``ForecastModule`` -> ``create_model``) and copies in the tensors read from the safetensors
file. Nothing is unpickled, so a file planted in the artifact store can fail to load but never
runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pulse_assets.config import ModelConfig
from pulse_assets.errors import PulseError
from pulse_assets.training.dataset import Scaler
from pulse_assets.training.models import ForecastModule

FormatName = Literal["pulse-forecast-model/1"]
FORMAT: FormatName = "pulse-forecast-model/1"
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILES = (CARD_FILE, WEIGHTS_FILE)


class ModelFileError(PulseError):
    """A stored model is not a readable weights file plus JSON card of this format."""


class ScalerCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float]
    std: list[float]


class ModelCard(BaseModel):
    """The JSON sidecar of a model: everything but the weights, checked on reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: FormatName
    architecture: ModelConfig
    n_features: Annotated[int, Field(ge=1)]
    n_outputs: Annotated[int, Field(ge=1)]
    lookback_rows: Annotated[int, Field(ge=0)]
    feature_names: list[str]
    label_names: list[str]
    x_scaler: ScalerCard
    y_scaler: ScalerCard

    @model_validator(mode="after")
    def _sizes_agree(self) -> ModelCard:
        sizes = {
            "feature_names": (len(self.feature_names), self.n_features),
            "x_scaler.mean": (len(self.x_scaler.mean), self.n_features),
            "x_scaler.std": (len(self.x_scaler.std), self.n_features),
            "label_names": (len(self.label_names), self.n_outputs),
            "y_scaler.mean": (len(self.y_scaler.mean), self.n_outputs),
            "y_scaler.std": (len(self.y_scaler.std), self.n_outputs),
        }
        wrong = {key: found for key, (found, wanted) in sizes.items() if found != wanted}
        if wrong:
            raise ValueError(
                f"lengths {wrong} disagree with n_features={self.n_features}, "
                f"n_outputs={self.n_outputs}"
            )
        return self


def card_of(module: ForecastModule) -> ModelCard:
    x_scaler, y_scaler = module.scalers()
    return ModelCard(
        format=FORMAT,
        architecture=module.architecture,
        n_features=len(module.feature_names),
        n_outputs=len(module.label_names),
        lookback_rows=module.lookback_rows,
        feature_names=list(module.feature_names),
        label_names=list(module.label_names),
        x_scaler=ScalerCard(mean=x_scaler.mean.tolist(), std=x_scaler.std.tolist()),
        y_scaler=ScalerCard(mean=y_scaler.mean.tolist(), std=y_scaler.std.tolist()),
    )


def write_model(module: ForecastModule, folder: Path) -> list[Path]:
    """Write the card and the core network's weights into ``folder``; returns both paths.

    float32 scaler values pass through JSON exactly (each is a double with a shortest repr).
    """
    folder.mkdir(parents=True, exist_ok=True)
    card = card_of(module)
    try:
        text = json.dumps(card.model_dump(mode="json"), indent=2, allow_nan=False)
    except ValueError as error:
        raise ModelFileError(
            f"model scalers hold NaN or inf, so the model cannot be stored: {error}; "
            "check the training features for constant or non-finite columns"
        ) from error
    (folder / CARD_FILE).write_text(text + "\n")
    weights = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in module.core.state_dict().items()
    }
    save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    return [folder / CARD_FILE, folder / WEIGHTS_FILE]


def _read_card(path: Path, where: str) -> ModelCard:
    try:
        raw = json.loads(path.read_text())
        return ModelCard.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(
            f"{where}: {path.name} is not readable JSON ({error}); the model files are damaged: "
            "retrain (materialize models/forecast_model)"
        ) from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '<top level>'}: {item['msg']}"
            for item in error.errors()
        )
        raise ModelFileError(
            f"{where}: {path.name} is not a {FORMAT} card ({problems}); "
            "retrain (materialize models/forecast_model)"
        ) from error


def _read_weights(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as error:
        raise ModelFileError(
            f"{where}: {path.name} is not a safetensors file ({error}); it was not loaded. "
            "Replace the version's files by retraining (materialize models/forecast_model)"
        ) from error


def read_model(folder: Path, where: str) -> ForecastModule:
    """Rebuild the model stored in ``folder`` from its card and weights; ``where`` names it."""
    card = _read_card(folder / CARD_FILE, where)
    weights = _read_weights(folder / WEIGHTS_FILE, where)
    module = ForecastModule(
        card.architecture,
        Scaler(
            np.asarray(card.x_scaler.mean, dtype=np.float32),
            np.asarray(card.x_scaler.std, dtype=np.float32),
        ),
        Scaler(
            np.asarray(card.y_scaler.mean, dtype=np.float32),
            np.asarray(card.y_scaler.std, dtype=np.float32),
        ),
        tuple(card.feature_names),
        tuple(card.label_names),
    )
    if module.lookback_rows != card.lookback_rows:
        raise ModelFileError(
            f"{where}: {CARD_FILE} says lookback_rows={card.lookback_rows} but its architecture "
            f"gives {module.lookback_rows}; the card was edited by hand: retrain"
        )
    try:
        module.core.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ModelFileError(
            f"{where}: {WEIGHTS_FILE} does not fit the architecture in {CARD_FILE}: "
            f"{str(error)[:500]}; retrain (materialize models/forecast_model)"
        ) from error
    return module.eval()
