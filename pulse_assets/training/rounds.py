"""One walk-forward round, framework-free: the Dagster asset calls it for each round in order.

Round R (its days ``start <= t < end``) is replayed as it would have run on its first day:

1. **Champion of R.** The previous round's challenger ran in the shadow during the previous
   round, beside its champion, both out of sample. On those shadow days (labels known before
   R starts) it replaces the champion when it beats it by ``promotion.min_improvement`` and,
   if ``promotion.significance_level`` is set, a one-sided Diebold-Mariano test agrees.
2. **Challenger of R.** Trained on the rows whose label was known before R's cutoff (R's
   start; for a live re-run of the latest round, the day after its latest labelled day), the
   last ``window_days`` of them, validated on the latest share with an embargo between fit and
   validation rows, warm-started from the champion when configured. Trained from the same data
   and config as an existing version, it is that version: nothing is registered twice.

Every alias move carries its simulated date (``as_of``): the audit then answers "which
version was champion on day t" (:func:`pulse_assets.training.audit.holder_at`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, timedelta
from typing import Protocol

import numpy as np
import polars as pl
from upath import UPath

from pulse_assets.config import PromotionConfig, RoundsConfig, TrainingConfig
from pulse_assets.errors import PulseError
from pulse_assets.evaluation.retrodiction import forecast_days
from pulse_assets.evaluation.significance import Alternative, Loss, diebold_mariano
from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.metrics.regression import regression_metrics
from pulse_assets.storage import content_hash
from pulse_assets.training.audit import holder_at
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.dataset import Dataset, assemble, chronological_split
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.promotion import PromotionDecision, decide
from pulse_assets.training.registry import (
    CHALLENGER,
    CHAMPION,
    DatasetCard,
    ModelRegistry,
    TrainingRecord,
    VersionTags,
)
from pulse_assets.training.trainer import TrainResult, cannot_warm_start, train, training_id


class RoundError(PulseError):
    """A round cannot run: a missing previous round, or too little known data."""


@dataclass(frozen=True)
class RoundWindow:
    """One round: its partition key and its days ``start <= t < end``."""

    key: str
    start: date
    end: date


@dataclass(frozen=True)
class RoundRecord:
    """What a round leaves for the next one, and for the UI: one row of models/forecast_model."""

    round: str
    start: date
    cutoff: date
    champion: str
    challenger: str
    challenger_cutoff: date
    promoted: bool
    decision: str
    shadow_days: int
    shadow_champion_rmse: float | None
    shadow_challenger_rmse: float | None
    dm_statistic: float | None
    dm_p_value: float | None
    trained: bool
    duplicate_of: str | None
    training_id: str
    train_first: date
    train_last: date
    train_rows: int
    epochs_run: int
    train_seconds: float
    warm_start_from: str | None

    def summary(self) -> str:
        """One line for the run log (one per round: each line is an event-log write): the
        round's champion and what became of its challenger."""
        champion = f"champion v{self.champion} ({'promoted' if self.promoted else 'kept'})"
        if not self.trained:
            return (
                f"{champion}; challenger v{self.challenger}: its data and config made that "
                "version already (same training id), not registered again"
            )
        start = f"warm from v{self.warm_start_from}" if self.warm_start_from else "cold start"
        return (
            f"{champion}; challenger v{self.challenger} trained on {self.train_first}.."
            f"{self.train_last} ({self.train_rows} rows, {start}, {self.epochs_run} epochs "
            f"in {self.train_seconds:.2f} s)"
        )

    def to_frame(self) -> pl.DataFrame:
        row = asdict(self)
        return pl.DataFrame([row], schema=RECORD_SCHEMA).with_columns(pl.col("start").alias("date"))

    @classmethod
    def from_row(cls, row: dict[str, object]) -> RoundRecord:
        return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


RECORD_SCHEMA: dict[str, pl.DataType] = {
    "round": pl.String(),
    "start": pl.Date(),
    "cutoff": pl.Date(),
    "champion": pl.String(),
    "challenger": pl.String(),
    "challenger_cutoff": pl.Date(),
    "promoted": pl.Boolean(),
    "decision": pl.String(),
    "shadow_days": pl.Int64(),
    "shadow_champion_rmse": pl.Float64(),
    "shadow_challenger_rmse": pl.Float64(),
    "dm_statistic": pl.Float64(),
    "dm_p_value": pl.Float64(),
    "trained": pl.Boolean(),
    "duplicate_of": pl.String(),
    "training_id": pl.String(),
    "train_first": pl.Date(),
    "train_last": pl.Date(),
    "train_rows": pl.Int64(),
    "epochs_run": pl.Int64(),
    "train_seconds": pl.Float64(),
    "warm_start_from": pl.String(),
}
RECORD_DESCRIPTIONS = {
    "round": "the round's partition key (its first day)",
    "start": "the round's first day",
    "cutoff": "labels known before this day trained the challenger",
    "champion": "the version that is champion during the round",
    "challenger": "the version trained for the round, forecasting in the shadow",
    "challenger_cutoff": "the challenger's cutoff: its shadow days start here",
    "promoted": "whether the previous round's challenger became champion",
    "decision": "why the champion was kept or replaced",
    "shadow_days": "out-of-sample days that decided the promotion",
    "shadow_champion_rmse": "the champion's RMSE on those shadow days",
    "shadow_challenger_rmse": "the previous challenger's RMSE on those shadow days",
    "dm_statistic": "Diebold-Mariano statistic, challenger vs champion (negative: better)",
    "dm_p_value": "one-sided DM p-value of that comparison",
    "trained": "whether a new version was trained (false: same data and config found)",
    "duplicate_of": "the existing version the same data and config had made",
    "training_id": "hash of the training data, config and warm start",
    "train_first": "first training row's day",
    "train_last": "last training row's day (its label known before the cutoff)",
    "train_rows": "fit and validation rows",
    "epochs_run": "epochs trained",
    "train_seconds": "wall time of the training",
    "warm_start_from": "the version whose weights it started from",
    "date": "the round's first day (the partition's time column)",
}


def earlier_records(records: pl.DataFrame, first_round: RoundWindow) -> list[RoundRecord]:
    """The stored records of the rounds before ``first_round``, oldest first (the latest
    stored one per round); the last is the round just before it."""
    if records.height == 0:
        return []
    before = (
        records.filter(pl.col("start") < first_round.start)
        .sort("start")
        .unique("round", keep="last", maintain_order=True)
    )
    return [RoundRecord.from_row(row) for row in before.iter_rows(named=True)]


def known_labels(labels: pl.DataFrame, cutoff: date) -> pl.DataFrame:
    """Label rows known before ``cutoff``: day t's label (its next trading day's value)
    resolves on that next day, so t is known when a later trading day is also before cutoff.
    ``labels`` holds every trading day (its rows are the spine), with or without a value."""
    spine = labels.filter(pl.col("date") < cutoff).sort("date")
    return spine.head(max(spine.height - 1, 0))


def live_cutoff(labels: pl.DataFrame, window: RoundWindow) -> date:
    """The cutoff of a live re-run: the day after the round's latest trading day with data, so
    every label resolved by then counts; the round's start when it has no day yet. It never
    passes the round's end: the latest day inside the round is before it."""
    inside = labels.filter(pl.col("date") >= window.start, pl.col("date") < window.end)
    if inside.height == 0:
        return window.start
    latest: date = inside.get_column("date").max()  # type: ignore[assignment]
    return latest + timedelta(days=1)


@dataclass(frozen=True)
class RoundData:
    """A round's training rows (fit and validation, with the embargo between) and their id."""

    fit: Dataset
    valid: Dataset
    first: date
    last: date
    fingerprint: str
    rows: pl.DataFrame  # the feature rows, for MLflow's dataset record


def round_data(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    config: TrainingConfig,
    rounds: RoundsConfig,
    cutoff: date,
) -> RoundData:
    known = known_labels(labels, cutoff).filter(
        pl.col("date") >= cutoff - timedelta(days=config.window_days)
    )
    rows = features.filter(pl.col("date").is_in(known.get_column("date").implode()))
    data = assemble(rows, known, config.labels, config.features)
    if len(data) == 0:
        raise RoundError(
            f"no row with a known label before the cutoff {cutoff}: materialize features and "
            "labels before it, or start the rounds later (rounds.start)"
        )
    fit, valid = chronological_split(data, config.validation_share, config.min_rows)
    if len(fit) <= rounds.embargo_rows:
        raise RoundError(f"{len(fit)} fit rows leave nothing after the embargo before {cutoff}")
    fit = fit.rows(slice(0, len(fit) - rounds.embargo_rows))
    fingerprint = content_hash(rows.sort("date")) + content_hash(known.sort("date"))
    return RoundData(fit, valid, _day(data.dates[0]), _day(data.dates[-1]), fingerprint, rows)


def _day(value: np.datetime64) -> date:
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class ShadowDecision:
    """The champion for a round, decided on the previous round's shadow days."""

    champion: str
    promoted: bool
    reason: str
    days: int
    champion_rmse: float | None = None
    challenger_rmse: float | None = None
    dm_statistic: float | None = None
    dm_p_value: float | None = None

    def figures(self) -> dict[str, float | str | int | None]:
        return {
            "shadow_days": self.days,
            "champion_rmse": self.champion_rmse,
            "challenger_rmse": self.challenger_rmse,
            "dm_statistic": self.dm_statistic,
            "dm_p_value": self.dm_p_value,
        }


def shadow_errors(
    module: ForecastModule,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    first: date,
    decided_on: date,
    label: str,
) -> pl.DataFrame:
    """``module``'s forecasts minus actuals on days ``first <= t`` whose label is known on
    ``decided_on``: date, actual, error."""
    known = known_labels(labels, decided_on).filter(pl.col("date") >= first)
    made = forecast_days(module, features, first, decided_on)
    return (
        made.join(known.select("date", pl.col(LABEL_PREFIX + label).alias("actual")), on="date")
        .select("date", "actual", (pl.col(f"forecast_{label}") - pl.col("actual")).alias("error"))
        .drop_nulls()
    )


def decide_champion(
    champion: ForecastModule,
    challenger: ForecastModule,
    versions: tuple[str, str],
    features: pl.DataFrame,
    labels: pl.DataFrame,
    shadow: tuple[date, date],
    promotion: PromotionConfig,
    min_shadow_days: int,
    label: str,
) -> ShadowDecision:
    """Champion or challenger for the next round, from their out-of-sample shadow days
    ``shadow[0] <= t`` with labels known on ``shadow[1]`` (the next round's start)."""
    champion_version, challenger_version = versions
    mine = shadow_errors(champion, features, labels, shadow[0], shadow[1], label)
    theirs = shadow_errors(challenger, features, labels, shadow[0], shadow[1], label)
    paired = mine.join(theirs, on="date", suffix="_challenger")
    if paired.height < min_shadow_days:
        return ShadowDecision(
            champion_version,
            False,
            f"champion {champion_version} kept: {paired.height} shadow day(s) of challenger "
            f"{challenger_version}, fewer than the {min_shadow_days} a decision needs",
            paired.height,
        )
    actual = paired.get_column("actual").to_numpy()
    champion_forecast = actual + paired.get_column("error").to_numpy()
    challenger_forecast = actual + paired.get_column("error_challenger").to_numpy()
    metric = promotion.metric
    # each forecast is its own naive reference here: only its absolute scores are read
    mine_scores = regression_metrics(actual, champion_forecast, champion_forecast)
    their_scores = regression_metrics(actual, challenger_forecast, challenger_forecast)
    margin = decide(metric, their_scores[metric], mine_scores[metric], promotion.min_improvement)
    test = diebold_mariano(
        paired.get_column("error_challenger").to_numpy(),
        paired.get_column("error").to_numpy(),
        Loss(promotion.loss),
        alternative=Alternative.LESS,
    )
    significant = promotion.significance_level is None or (
        test.p_value < promotion.significance_level
    )
    promoted = margin.promote and significant
    reason = _decision_reason(margin, test.p_value, promotion, promoted, paired.height)
    return ShadowDecision(
        challenger_version if promoted else champion_version,
        promoted,
        reason,
        paired.height,
        mine_scores["rmse"],
        their_scores["rmse"],
        test.statistic,
        test.p_value,
    )


def _decision_reason(
    margin: PromotionDecision,
    p_value: float,
    promotion: PromotionConfig,
    promoted: bool,
    days: int,
) -> str:
    level = promotion.significance_level
    test = f"one-sided DM p = {p_value:.3g}" + (f" (level {level:g})" if level else "")
    verdict = "promoted" if promoted else "not promoted"
    return f"{verdict} on {days} shadow days: {margin.reason}; {test}"


ModelLoader = Callable[[str], ForecastModule]


class RowWeighting(Protocol):
    """Per-row training weights of a round (the curriculum): one positive weight per row of a
    frame with a ``date`` column; equal weights train exactly the unweighted model."""

    def row_weights(self, frame: pl.DataFrame) -> np.ndarray: ...


def weighted(data: RoundData, weighting: RowWeighting | None) -> RoundData:
    """``data`` with its fit rows weighted; non-uniform weights join the data fingerprint, so
    a weighted round never finds the unweighted round's version as its own."""
    if weighting is None:
        return data
    fit = data.fit.with_weights(weighting.row_weights(pl.DataFrame({"date": data.fit.dates})))
    if fit.weights is None:
        return replace(data, fit=fit)
    digest = hashlib.sha256(fit.weights.astype(np.float64).tobytes()).hexdigest()[:16]
    return replace(data, fit=fit, fingerprint=f"{data.fingerprint}|weights:{digest}")


def weights_summary(data: RoundData) -> str:
    """How the fit rows were weighted, for the model's MLflow params."""
    weights = data.fit.weights
    if weights is None:
        return "uniform"
    return f"curriculum (min {weights.min():.3g}, max {weights.max():.3g}, mean 1)"


@dataclass
class RoundOutcome:
    record: RoundRecord
    challenger_module: ForecastModule
    result: TrainResult | None


@dataclass(frozen=True)
class RoundContext:
    """Everything a round needs that does not change from round to round of one run."""

    training: TrainingConfig
    rounds: RoundsConfig
    registry: ModelRegistry
    checkpoints_root: str | os.PathLike[str] | UPath
    load: ModelLoader
    trigger: str
    run_id: str | None
    drifted_features: tuple[str, ...] = ()
    log: Callable[[str], None] = lambda message: None
    uniform_twin: bool = True  # train a weighted challenger's uniform-weight twin beside it


def run_round(
    context: RoundContext,
    window: RoundWindow,
    previous: RoundRecord | None,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    cutoff: date,
    weighting: RowWeighting | None = None,
) -> RoundOutcome:
    """Decide the round's champion, then train (or find) and register its challenger;
    ``weighting`` (the round's curriculum) weighs the fit rows in the training loss."""
    decision = _champion_of_round(context, window, previous, features, labels)
    if previous is not None and decision.days:
        _record_shadow_outcome(context, previous, decision)
    unweighted = round_data(features, labels, context.training, context.rounds, cutoff)
    data = weighted(unweighted, weighting)
    warm = _warm_start(context, decision.champion if previous else None, data)
    identity = _training_id(context, data, warm)
    existing = context.registry.with_training_id(identity)
    result: TrainResult | None = None
    train_seconds = 0.0
    if existing is not None:
        challenger, module = existing.version, context.load(existing.version)
    else:
        started = time.perf_counter()
        result = _train(context, data, warm, identity)
        train_seconds = time.perf_counter() - started
        twin = _uniform_twin(context, unweighted, data, warm)
        module = result.module
        challenger = _register(
            context, window, cutoff, data, (result, twin), decision, warm, identity
        )
    champion = decision.champion or challenger
    reason = decision.reason if decision.champion else "first model: no champion to beat"
    _move(context, CHAMPION, champion, window.start, reason, decision.figures())
    _move(context, CHALLENGER, challenger, cutoff, f"trained for round {window.key}", {})
    record = RoundRecord(
        round=window.key,
        start=window.start,
        cutoff=cutoff,
        champion=champion,
        challenger=challenger,
        challenger_cutoff=cutoff,
        promoted=decision.promoted,
        decision=reason,
        shadow_days=decision.days,
        shadow_champion_rmse=decision.champion_rmse,
        shadow_challenger_rmse=decision.challenger_rmse,
        dm_statistic=decision.dm_statistic,
        dm_p_value=decision.dm_p_value,
        trained=result is not None,
        duplicate_of=existing.version if existing else None,
        training_id=identity,
        train_first=data.first,
        train_last=data.last,
        train_rows=len(data.fit) + len(data.valid),
        epochs_run=len(result.history) if result else 0,
        train_seconds=train_seconds,
        warm_start_from=warm[0] if warm else None,
    )
    return RoundOutcome(record, module, result)


def _champion_of_round(
    context: RoundContext,
    window: RoundWindow,
    previous: RoundRecord | None,
    features: pl.DataFrame,
    labels: pl.DataFrame,
) -> ShadowDecision:
    if previous is None:
        return ShadowDecision("", False, "first round: no champion yet", 0)
    if previous.challenger == previous.champion:
        return ShadowDecision(
            previous.champion,
            False,
            f"champion {previous.champion} kept: round {previous.round} had no other challenger",
            0,
        )
    return decide_champion(
        context.load(previous.champion),
        context.load(previous.challenger),
        (previous.champion, previous.challenger),
        features,
        labels,
        (max(previous.start, previous.challenger_cutoff), window.start),
        context.training.promotion,
        context.rounds.min_shadow_days,
        context.training.labels[0],
    )


def _record_shadow_outcome(
    context: RoundContext, previous: RoundRecord, decision: ShadowDecision
) -> None:
    """The previous challenger's out-of-sample result, on its MLflow run and its version."""
    context.registry.log_version_metrics(
        previous.challenger,
        {
            "shadow_rmse": decision.challenger_rmse,
            "shadow_champion_rmse": decision.champion_rmse,
            "shadow_dm_p_value": decision.dm_p_value,
            "shadow_days": float(decision.days),
        },
        description=f"Challenger of round {previous.round}: {decision.reason}.",
    )


def _warm_start(
    context: RoundContext, champion: str | None, data: RoundData
) -> tuple[str, ForecastModule] | None:
    """The champion to start from, or None (cold start, said in the log when not by choice)."""
    if not (context.rounds.warm_start and champion):
        return None
    module = context.load(champion)
    problem = cannot_warm_start(module, context.training, data.fit)
    if problem:
        context.log(f"cold start instead of warm start from version {champion}: {problem}")
        return None
    return champion, module


def _round_config(context: RoundContext, warm: tuple[str, ForecastModule] | None) -> TrainingConfig:
    """A warm start trains ``warm_start_epochs`` epochs: it begins from a trained model."""
    if warm is None:
        return context.training
    optimizer = context.training.optimizer.model_copy(
        update={"epochs": context.rounds.warm_start_epochs}
    )
    return context.training.model_copy(update={"optimizer": optimizer})


def _training_id(
    context: RoundContext, data: RoundData, warm: tuple[str, ForecastModule] | None
) -> str:
    start = "cold" if warm is None else context.registry.training_id_of(warm[0])
    digest = hashlib.sha256(f"{data.fingerprint}|{start}".encode()).hexdigest()
    return training_id(digest, _round_config(context, warm))


def _train(
    context: RoundContext,
    data: RoundData,
    warm: tuple[str, ForecastModule] | None,
    identity: str,
) -> TrainResult:
    config = _round_config(context, warm)
    checkpoints = CheckpointStore(
        context.checkpoints_root, identity, keep=config.recovery.keep_checkpoints
    )
    return train(
        data.fit,
        data.valid,
        config,
        checkpoints,
        warm_start=warm[1] if warm else None,
        log=context.log,
    )


def _uniform_twin(
    context: RoundContext,
    unweighted: RoundData,
    data: RoundData,
    warm: tuple[str, ForecastModule] | None,
) -> TrainResult | None:
    """The challenger trained again with uniform row weights (same rows, warm start, seed and
    config), when its curriculum weights were not uniform and twins are on: what the round's
    challenger would have been without the curriculum, compared out of sample downstream."""
    if data.fit.weights is None or not context.uniform_twin:
        return None
    return _train(context, unweighted, warm, _training_id(context, unweighted, warm))


def _register(
    context: RoundContext,
    window: RoundWindow,
    cutoff: date,
    data: RoundData,
    results: tuple[TrainResult, TrainResult | None],
    decision: ShadowDecision,
    warm: tuple[str, ForecastModule] | None,
    identity: str,
) -> str:
    """Log and register the challenger (``results[0]``) with its uniform twin (``[1]``)."""
    result, twin = results
    tags = VersionTags(
        round=window.key,
        cutoff=cutoff,
        train_first=data.first,
        train_last=data.last,
        training_id=identity,
        trigger=context.trigger,
        parent_version=decision.champion or None,
        warm_start_from=warm[0] if warm else None,
        data_versions=data.fingerprint,
        dagster_run_id=context.run_id or "",
        drifted_features=context.drifted_features,
        curriculum_weighted=data.fit.weights is not None,
        uniform_twin=twin is not None,
    )
    config = _round_config(context, warm)
    start = f"warm from v{warm[0]}" if warm else "cold start"
    beside = (
        f"; its uniform-weight twin (best validation loss {twin.best_val_loss:.4g}) is logged "
        "beside it"
        if twin
        else ""
    )
    record = TrainingRecord(
        params=_params(config, data, result, window, cutoff),
        losses={
            "train_loss": [(r.epoch, r.train_loss) for r in result.history],
            "val_loss": [(r.epoch, r.val_loss) for r in result.history],
            "learning_rate": [(r.epoch, r.learning_rate) for r in result.history],
        },
        dataset=DatasetCard(
            name=f"daily_features[{data.first}...{data.last}]",
            digest=data.fingerprint,
            rows=data.rows.height,
            schema={name: str(dtype.base_type()) for name, dtype in data.rows.schema.items()},
            tags={"round": window.key, "cutoff": cutoff.isoformat()},
        ),
        config=config.model_dump(mode="json"),
        version_tags=tags.to_tags(),
        run_name=f"{context.trigger}-{cutoff}",
        description=(
            f"Challenger of round {window.key} ({context.trigger}): trained on "
            f"{data.first}..{data.last} ({len(data.fit)} fit rows, {start}), best validation loss "
            f"{result.best_val_loss:.4g} at epoch {result.best_epoch}{beside}; judged on the "
            "round's shadow days at the next round."
        ),
    )
    return context.registry.log_training(
        record, result.module, twin.module if twin else None
    ).version


def _params(
    config: TrainingConfig, data: RoundData, result: TrainResult, window: RoundWindow, cutoff: date
) -> dict[str, object]:
    return {
        "round": window.key,
        "cutoff": cutoff.isoformat(),
        "model.kind": config.model.kind,
        "model.hidden_sizes": str(config.model.hidden_sizes),
        "model.dropout": config.model.dropout,
        "model.lookback_rows": config.model.lookback_rows,
        "optimizer": config.optimizer.name,
        "batch_size": config.optimizer.batch_size,
        "learning_rate": config.optimizer.learning_rate,
        "epochs": config.optimizer.epochs,
        "patience": config.optimizer.patience,
        "seed": config.optimizer.seed,
        "labels": ",".join(config.labels),
        "n_features": len(data.fit.feature_names),
        "fit_rows": len(data.fit),
        "validation_rows": len(data.valid),
        "best_epoch": result.best_epoch,
        "device": result.device,
        "sample_weights": weights_summary(data),
    }


def _move(
    context: RoundContext,
    alias: str,
    version: str,
    as_of: date,
    reason: str,
    figures: dict[str, float | str | int | None],
) -> None:
    """Point ``alias`` at ``version`` from ``as_of`` on, unless it already does (a re-run)."""
    registry = context.registry
    history = registry.audit.history(registry.model_name, alias)
    if holder_at(history, alias, as_of) == version and any(
        e.as_of == as_of and e.to_version == version for e in history
    ):
        return
    registry.move_alias(
        alias,
        version,
        actor=f"pulse-assets ({context.trigger})",
        reason=reason,
        figures=figures,
        run_id=context.run_id,
        as_of=as_of,
    )
