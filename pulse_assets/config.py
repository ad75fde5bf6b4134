"""Typed settings loaded from ``configs/*.yaml`` and validated at load.

An unknown key, a wrong type or a bad value is a :class:`ConfigError` that names the key
and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pulse_assets.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "pulse.yaml"
CONFIG_ENV_VAR = "PULSE_CONFIG"
HOME_ENV_VAR = "PULSE_HOME"


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'America/New_York'"
        ) from error
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_time_zone)]
"""An IANA time zone, checked when the settings load, not when an asset first uses it."""


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
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _end_after_start(self) -> PartitionsConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class StoreConfig(StrictModel):
    """Where partition files live: a local folder (default ``$PULSE_HOME/store``) or a URL."""

    root: str | None = None


class QualityConfig(StrictModel):
    """Quarantine limits of a raw run: over the whole run, and per partition (day), so one bad
    day inside a clean year is visible. A run over a blocking limit stores none of its rows."""

    max_quarantine_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_partition_quarantine_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    block_on_partition_share: bool = False


class FeatureInput(StrictModel):
    """Which columns of one raw source enter the blended feature table, under which prefix.

    ``published_lag_days`` is the source's knowledge time: a value dated d becomes known on
    calendar day d + lag and enters the first spine day at or after it (the raw asset keeps
    the source's own date). Staleness then counts from that day. ``emit_raw`` names the raw
    columns that are features as they are (already stationary, e.g. a bounded share
    difference); every other raw column is a level that only feeds indicators and
    normalization and never reaches the model.
    """

    prefix: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    columns: list[str] = Field(min_length=1)
    entity: str | None = None
    max_staleness_days: Annotated[int, Field(ge=0)] = 0
    published_lag_days: Annotated[int, Field(ge=0)] = 0
    emit_raw: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _emitted_columns_are_inputs(self) -> FeatureInput:
        unknown = [name for name in self.emit_raw if name not in self.columns]
        if unknown:
            raise ValueError(f"emit_raw names {unknown}, which are not in columns {self.columns}")
        return self

    def blended(self, column: str) -> str:
        """The name of a raw column in the blended table."""
        return f"{self.prefix}_{column}"


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
        if lag := self.inputs[self.spine].published_lag_days:
            raise ValueError(
                f"the spine {self.spine!r} has published_lag_days {lag}: its days are the "
                "feature rows and the labels, so its values must be known on their own date (0)"
            )
        self._indicators_do_not_shadow_raw_columns()
        return self

    def _indicators_do_not_shadow_raw_columns(self) -> None:
        raw = {inp.blended(c) for inp in self.inputs.values() for c in inp.columns}
        for step in self.steps:
            if isinstance(step, IndicatorStep):
                clashes = sorted(raw & {spec.name for spec in step.params.indicators if spec.name})
                if clashes:
                    raise ValueError(
                        f"indicator name(s) {clashes} equal raw input columns; rename them"
                    )

    def dropped_raw_columns(self) -> list[str]:
        """Raw blended columns that feed the steps but are not feature columns (levels)."""
        return [
            inp.blended(column)
            for inp in self.inputs.values()
            for column in inp.columns
            if column not in inp.emit_raw
        ]

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
        """Calendar days that surely hold ``lookback_rows`` trading days (252 a year, holidays),
        plus the longest publication lag: a value is read that many days after its date."""
        longest_lag = max(inp.published_lag_days for inp in self.inputs.values())
        return int(self.lookback_rows() * 1.5) + 20 + longest_lag


class ModelConfig(StrictModel):
    """The plan's ``create_model``: an MLP over one row or a recurrent net over recent rows."""

    kind: Literal["mlp", "gru", "lstm"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64, 32])
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    lookback_rows: Annotated[int, Field(ge=1)] = 20
    num_layers: Annotated[int, Field(ge=1)] = 1

    @property
    def input_window(self) -> int | None:
        """Rows one forecast reads: a window of ``lookback_rows`` for a recurrent net; None for
        an MLP, which reads the day's row alone. The one place that knows it."""
        return None if self.kind == "mlp" else self.lookback_rows


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    batch_size: Annotated[int, Field(ge=1)] = 64
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-5
    epochs: Annotated[int, Field(ge=1)] = 40
    patience: Annotated[int, Field(ge=1)] = 6
    seed: int = 7


class RecoveryConfig(StrictModel):
    """NaN/inf loss: restore the last good checkpoint and retry with a lower learning rate."""

    max_retries: Annotated[int, Field(ge=0)] = 3
    lr_factor: Annotated[float, Field(gt=0, lt=1)] = 0.3
    keep_checkpoints: Annotated[int, Field(ge=1)] = 3


class MonitorConfig(StrictModel):
    """The plan's StatisticalAnomalyDetector over recent epochs' validation loss."""

    method: Literal["z-score", "iqr"] = "z-score"
    threshold: Annotated[float, Field(gt=0)] = 3.0
    window: Annotated[int, Field(ge=3)] = 8


class PromotionConfig(StrictModel):
    """``champion`` moves to the challenger when, on the shadow days, it beats the champion by
    ``min_improvement`` (relative) in ``metric`` and, when ``significance_level`` is set, a
    one-sided Diebold-Mariano test on ``loss`` rejects equal accuracy at that level."""

    metric: Literal["rmse", "mae", "median_ae", "p90_ae"] = "rmse"
    min_improvement: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    significance_level: Annotated[float, Field(gt=0.0, lt=0.5)] | None = 0.10
    loss: Literal["squared", "absolute"] = "squared"


class TrackingConfig(StrictModel):
    """MLflow: ``uri`` null means sqlite in PULSE_HOME; ``MLFLOW_TRACKING_URI`` overrides both."""

    uri: str | None = None
    model_name: str = "pulse_forecast"
    experiment: str = "pulse-forecast"
    retries: Annotated[int, Field(ge=0)] = 2
    timeout_s: Annotated[float, Field(gt=0)] = 10.0


class TrainingConfig(StrictModel):
    labels: list[str] = Field(min_length=1)
    features: list[str] | None = None
    window_days: Annotated[int, Field(ge=30)] = 1825
    validation_share: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.2
    min_rows: Annotated[int, Field(ge=10)] = 200
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    monitor: MonitorConfig = MonitorConfig()
    promotion: PromotionConfig = PromotionConfig()
    tracking: TrackingConfig = TrackingConfig()


class BaselineSettings(StrictModel):
    """How the baselines are fitted; the defaults are the field's usual choices."""

    trailing_days: int = Field(default=20, ge=1, description="k of the trailing mean of |r|")
    ewma_lambda: float = Field(default=0.94, gt=0.0, lt=1.0, description="RiskMetrics decay")
    min_fit_rows: int = Field(
        default=20, ge=2, description="fewer returns before the cutoff: no baseline, an error"
    )
    garch_min_fit_rows: int = Field(
        default=250, ge=10, description="fewer returns before the cutoff: GARCH falls back"
    )

    @model_validator(mode="after")
    def _trailing_window_fits(self) -> BaselineSettings:
        if self.min_fit_rows < self.trailing_days:
            raise ValueError(
                f"min_fit_rows ({self.min_fit_rows}) must be at least trailing_days "
                f"({self.trailing_days}), so the first forecast of a round has a full window"
            )
        return self


class RoundsConfig(StrictModel):
    """Training rounds through time (the walk-forward): a round's model is trained on what was
    known before the round started and runs as the shadow challenger during it."""

    cadence: Literal["weekly", "monthly", "quarterly"] = "monthly"
    start: date = Field(description="the first round; it needs window rows known before it")
    warm_start: bool = Field(
        default=True, description="start each round from the champion's weights"
    )
    warm_start_epochs: Annotated[int, Field(ge=1)] = 3
    min_shadow_days: Annotated[int, Field(ge=3)] = Field(
        default=10, description="fewer shadow days of a challenger: the champion is kept"
    )
    embargo_rows: Annotated[int, Field(ge=1)] = Field(
        default=1, description="rows dropped between fit and validation rows (>= label horizon)"
    )


class MultivariateDriftConfig(StrictModel):
    subsample: Annotated[int, Field(ge=20)] = 300
    n_permutations: Annotated[int, Field(ge=10)] = 100
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.05


class DriftConfig(StrictModel):
    """A feature drifts when its FDR-adjusted p-value is below ``fdr_q`` and its effect is
    large enough (PSI or normalized Wasserstein); drift triggers after ``persistence``
    consecutive checks."""

    window_days: Annotated[int, Field(ge=7)] = 60
    fdr_q: Annotated[float, Field(gt=0, lt=1)] = 0.05
    min_psi: Annotated[float, Field(ge=0)] = 0.25
    min_wasserstein: Annotated[float, Field(ge=0)] = 0.5
    persistence: Annotated[int, Field(ge=1)] = 3
    psi_bins: Annotated[int, Field(ge=2)] = 10
    multivariate: MultivariateDriftConfig = MultivariateDriftConfig()


class FreshnessConfig(StrictModel):
    raw_fail_hours: Annotated[float, Field(gt=0)] = 48
    raw_warn_hours: Annotated[float, Field(gt=0)] = 30
    features_fail_hours: Annotated[float, Field(gt=0)] = 54
    features_warn_hours: Annotated[float, Field(gt=0)] = 32


class SymbolicRulesConfig(StrictModel):
    quantiles: Annotated[int, Field(ge=2, le=20)] = 5
    max_pair_features: Annotated[int, Field(ge=0, le=20)] = 6
    fdr_q: Annotated[float, Field(gt=0, lt=1)] = 0.05
    min_support: Annotated[int, Field(ge=5)] = 15
    max_rules: Annotated[int, Field(ge=1)] = 40


class LLMRulesConfig(StrictModel):
    """The GPT path: key from ``OPENAI_API_KEY``, endpoint from ``OPENAI_BASE_URL`` or here."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    max_requests: Annotated[int, Field(ge=0)] = 2
    max_tokens: Annotated[int, Field(ge=64)] = 1500
    max_run_tokens: Annotated[int, Field(ge=64)] = 6000
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_retries: Annotated[int, Field(ge=0)] = 2
    max_rules: Annotated[int, Field(ge=1)] = 10
    max_prompt_chars: Annotated[int, Field(ge=1000)] = 8000


class RuleEvaluationConfig(StrictModel):
    resamples: Annotated[int, Field(ge=100)] = 1000
    block_days: Annotated[int, Field(ge=1)] = 5
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    seed: int = 11
    max_active: Annotated[int, Field(ge=1)] = 5


class RulesConfig(StrictModel):
    """Rules are mined on the earlier ``mining_share`` of the champion's retrodiction windows
    in the last ``window_days`` and evaluated on the later ones only."""

    window_days: Annotated[int, Field(ge=30)] = 730
    mining_share: Annotated[float, Field(gt=0.2, lt=0.9)] = 0.6
    symbolic: SymbolicRulesConfig = SymbolicRulesConfig()
    llm: LLMRulesConfig = LLMRulesConfig()
    evaluation: RuleEvaluationConfig = RuleEvaluationConfig()


class SqlConfig(StrictModel):
    """The metrics and audit store: null means sqlite in PULSE_HOME (pulse.db)."""

    url: str | None = None


class Settings(StrictModel):
    partitions: PartitionsConfig
    store: StoreConfig = StoreConfig()
    sql: SqlConfig = SqlConfig()
    quality: QualityConfig = QualityConfig()
    sources: dict[str, SourceConfig] = Field(min_length=1)
    features: FeaturesConfig
    training: TrainingConfig
    drift: DriftConfig = DriftConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    rules: RulesConfig = RulesConfig()
    rounds: RoundsConfig
    baselines: BaselineSettings = BaselineSettings()

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in sources:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"source name {name!r} must be letters, digits and underscores")
        return sources

    @model_validator(mode="after")
    def _rounds_inside_partitions(self) -> Settings:
        end = self.partitions.end
        if self.rounds.start <= self.partitions.start or (end and self.rounds.start >= end):
            raise ValueError(
                f"rounds.start {self.rounds.start} must lie inside the partitions "
                f"({self.partitions.start}..{end or 'today'}), after the first day, so the first "
                "round has history to train on"
            )
        return self

    @model_validator(mode="after")
    def _features_name_sources(self) -> Settings:
        for name in self.features.inputs:
            if name not in self.sources:
                raise ValueError(f"features.inputs names unknown source {name!r}")
        for label in self.features.labels:
            if label.source not in self.sources:
                raise ValueError(f"label {label.name!r} names unknown source {label.source!r}")
        known_labels = {label.name for label in self.features.labels}
        unknown = [name for name in self.training.labels if name not in known_labels]
        if unknown:
            raise ValueError(
                f"training.labels names unknown label(s) {unknown}; known: {sorted(known_labels)}"
            )
        return self


def pulse_home() -> Path:
    """The one data home: ``$PULSE_HOME`` or ``.pulse/`` in the repository."""
    return Path(os.environ.get(HOME_ENV_VAR) or REPO_ROOT / ".pulse").resolve()


def store_root(settings: Settings) -> str:
    return settings.store.root or str(pulse_home() / "store")


def sql_url(settings: Settings) -> str:
    return settings.sql.url or f"sqlite:///{pulse_home() / 'pulse.db'}"


def tracking_uri(settings: Settings) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then the config, then sqlite in PULSE_HOME."""
    configured = os.environ.get("MLFLOW_TRACKING_URI") or settings.training.tracking.uri
    return configured or f"sqlite:///{pulse_home() / 'mlflow.db'}"


def artifacts_uri() -> str:
    return (pulse_home() / "mlartifacts").as_uri()


def checkpoints_root() -> Path:
    return pulse_home() / "checkpoints"


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
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, config_path)) from error
    _check_source_plugins(settings, config_path)
    return settings


def _check_source_plugins(settings: Settings, path: Path) -> None:
    """Import each source's plugin and validate its params now, so a bad module, class,
    param or time zone fails `dagster definitions validate`, not the asset's first run."""
    from pulse_assets.ingest.base import load_source  # the plugins import this module

    for name, source in settings.sources.items():
        try:
            load_source(name, source.plugin, source.params)
        except ConfigError as error:
            raise ConfigError(
                f"invalid configuration in {path}:\n  sources.{name}: {error}"
            ) from error
