"""Typed settings loaded from ``configs/*.yaml`` and validated at load.

An unknown key, a wrong type or a bad value is a :class:`ConfigError` that names the key
and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pulse_assets.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "pulse.yaml"
CONFIG_ENV_VAR = "PULSE_CONFIG"
HOME_ENV_VAR = "PULSE_HOME"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(StrictModel):
    """Type and allowed values of one column of a raw source."""

    type: Literal["float", "int", "str", "bool"]
    required: bool = True
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None


class SourceSchema(StrictModel):
    columns: dict[str, ColumnSpec]
    unique: list[str] = Field(default_factory=lambda: ["entity", "date"])

    @model_validator(mode="after")
    def _unique_columns_exist(self) -> SourceSchema:
        known = {"entity", "date", *self.columns}
        unknown = [name for name in self.unique if name not in known]
        if unknown:
            raise ValueError(f"unique names columns {unknown} that the schema does not define")
        return self


class SourceConfig(StrictModel):
    """One ingestion plugin, as in the plan's ``ingestion_plugins``: class path plus params."""

    plugin: str = Field(pattern=r"^[\w.]+:\w+$", description="module.path:ClassName")
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    data_schema: SourceSchema = Field(alias="schema")


class PartitionsConfig(StrictModel):
    """The daily retrodiction windows: ``end`` is exclusive; none means up to today."""

    start: date
    end: date | None = None
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _end_after_start(self) -> PartitionsConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class StoreConfig(StrictModel):
    """Where partition files live: a local folder (default ``$PULSE_HOME/store``) or a URL."""

    root: str | None = None


class QualityConfig(StrictModel):
    max_quarantine_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05


class FeatureInput(StrictModel):
    """Which columns of one raw source enter the blended feature table, under which prefix."""

    prefix: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    columns: list[str] = Field(min_length=1)
    entity: str | None = None
    max_staleness_days: Annotated[int, Field(ge=0)] = 0


class FillnaParams(StrictModel):
    fill_value: float = 0.0
    staleness_cap_days: Annotated[int, Field(ge=1)] = 365


IndicatorKind = Literal[
    "log_return", "rolling_volatility", "momentum", "rsi", "ma_gap", "change", "rolling_zscore"
]


class IndicatorSpec(StrictModel):
    kind: IndicatorKind
    column: str
    windows: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1])
    name: str | None = None

    @model_validator(mode="after")
    def _name_needs_one_window(self) -> IndicatorSpec:
        if self.name is not None and len(self.windows) != 1:
            raise ValueError("an explicit name needs exactly one window")
        return self


class IndicatorParams(StrictModel):
    indicators: list[IndicatorSpec] = Field(min_length=1)


class NormalizeParams(StrictModel):
    method: Literal["z-score", "min-max"] = "z-score"
    window: Annotated[int, Field(ge=2)] = 252
    columns: list[str] | None = None
    suffix: str | None = None


class FillnaStep(StrictModel):
    type: Literal["fillna"]
    params: FillnaParams = FillnaParams()


class IndicatorStep(StrictModel):
    type: Literal["calculate_indicators"]
    params: IndicatorParams


class NormalizeStep(StrictModel):
    type: Literal["normalize"]
    params: NormalizeParams = NormalizeParams()


PipelineStep = Annotated[FillnaStep | IndicatorStep | NormalizeStep, Field(discriminator="type")]


class LabelSpec(StrictModel):
    """A forecast target: the next spine day's value of a source column, kept apart from features."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: str
    column: str
    entity: str | None = None
    kind: Literal["value_next", "log_return_next", "abs_log_return_next"]


class FeaturesConfig(StrictModel):
    spine: str
    inputs: dict[str, FeatureInput]
    steps: list[PipelineStep]
    labels: list[LabelSpec] = Field(default_factory=list)
    label_horizon_days: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesConfig:
        if self.spine not in self.inputs:
            raise ValueError(f"spine {self.spine!r} is not one of the inputs {sorted(self.inputs)}")
        fillna_at = [i for i, step in enumerate(self.steps) if step.type == "fillna"]
        if fillna_at and fillna_at != [0]:
            raise ValueError("fillna may appear once and must be the first step")
        prefixes = [inp.prefix for inp in self.inputs.values()]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"input prefixes must be distinct, got {prefixes}")
        return self

    def lookback_rows(self) -> int:
        """Spine rows of history the latest row needs: every window chained, plus one."""
        rows = 1
        for step in self.steps:
            if isinstance(step, IndicatorStep):
                rows += max(max(spec.windows) for spec in step.params.indicators) + 1
            elif isinstance(step, NormalizeStep):
                rows += step.params.window
        return rows

    def lookback_days(self) -> int:
        """Calendar days that surely hold ``lookback_rows`` trading days (252 a year, holidays)."""
        return int(self.lookback_rows() * 1.5) + 20


class Settings(StrictModel):
    partitions: PartitionsConfig
    store: StoreConfig = StoreConfig()
    quality: QualityConfig = QualityConfig()
    sources: dict[str, SourceConfig] = Field(min_length=1)
    features: FeaturesConfig

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in sources:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"source name {name!r} must be letters, digits and underscores")
        return sources

    @model_validator(mode="after")
    def _features_name_sources(self) -> Settings:
        for name in self.features.inputs:
            if name not in self.sources:
                raise ValueError(f"features.inputs names unknown source {name!r}")
        for label in self.features.labels:
            if label.source not in self.sources:
                raise ValueError(f"label {label.name!r} names unknown source {label.source!r}")
        return self


def pulse_home() -> Path:
    """The one data home: ``$PULSE_HOME`` or ``.pulse/`` in the repository."""
    return Path(os.environ.get(HOME_ENV_VAR) or REPO_ROOT / ".pulse").resolve()


def store_root(settings: Settings) -> str:
    return settings.store.root or str(pulse_home() / "store")


def _format_validation_error(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check its spelling against configs/README)")
        else:
            lines.append(f"  {key}: {item['msg']}")
    return f"invalid configuration in {path}:\n" + "\n".join(lines)


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a settings file (default ``$PULSE_CONFIG`` or ``configs/pulse.yaml``)."""
    config_path = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    if not config_path.is_file():
        raise ConfigError(
            f"configuration file {config_path} does not exist; "
            f"set {CONFIG_ENV_VAR} or create it from configs/pulse.yaml"
        )
    try:
        raw = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {config_path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {config_path} must hold a mapping at the top level")
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, config_path)) from error
