"""One turn of the rule loop, framework-free: propose, evaluate, promote.

retrodiction errors -> rule candidates (symbolic, LLM) -> evaluated on later windows ->
accepted -> active (greedy selection, no conflicts) -> rule-adjusted forecasts in the next
retrodiction -> new errors. Round k+1 reads the rules round k left in the repository.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl

from pulse_assets.config import RulesConfig
from pulse_assets.features.pipeline import feature_columns
from pulse_assets.rules.evaluation import conflicts, evaluate_rules, select_rules
from pulse_assets.rules.language import Rule, adjusted_expr
from pulse_assets.rules.llm import LLMOutcome, generate
from pulse_assets.rules.repository import (
    NewRule,
    RuleRecord,
    RuleRepository,
    StoredRuleError,
    read_rule,
)
from pulse_assets.rules.symbolic import MinerSettings, find_patterns, mine_rules
from pulse_assets.training.dataset import TrainingDataError


@dataclass(frozen=True)
class RuleData:
    """The champion's out-of-sample retrodiction windows joined with the features of each day."""

    frame: pl.DataFrame
    features: list[str]


def rule_frame(
    retrodiction: pl.DataFrame, features: pl.DataFrame, champion_version: str, config: RulesConfig
) -> RuleData:
    """The champion's out-of-sample retrodiction windows of the last ``window_days``, with the
    features of each day."""
    if retrodiction.height == 0:
        raise TrainingDataError(
            "no retrodiction rows: backfill evaluation/retrodiction over some rounds first"
        )
    last = retrodiction.get_column("date").max()
    if not isinstance(last, date):
        raise TrainingDataError("the retrodiction rows hold no day: backfill them again")
    first = last - timedelta(days=config.window_days - 1)
    windows = retrodiction.filter(
        (pl.col("date") >= first)
        & (pl.col("model_version") == champion_version)
        & ~pl.col("in_sample")
    )
    if windows.height == 0:
        raise TrainingDataError(
            f"no out-of-sample retrodiction windows of champion {champion_version} "
            f"between {first} and {last}: backfill evaluation/retrodiction for it"
        )
    names = [c for c in feature_columns(features) if c not in windows.columns]
    return RuleData(
        windows.join(features.select("date", *names), on="date", how="left").sort("date"), names
    )


def split_windows(frame: pl.DataFrame, mining_share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Earlier windows mine, later windows evaluate: a rule is never tested where it was found."""
    cut = int(frame.height * mining_share)
    return frame.head(cut), frame.slice(cut)


def date_range(frame: pl.DataFrame, what: str) -> tuple[date, date]:
    """First and last ``date`` of ``frame``; a TrainingDataError when it has no dated row."""
    dates = frame.get_column("date")
    first, last = dates.min(), dates.max()
    if not isinstance(first, date) or not isinstance(last, date):
        raise TrainingDataError(
            f"no retrodiction windows to {what} rules on ({frame.height} rows): backfill "
            "evaluation/retrodiction over more days, or raise rules.window_days"
        )
    return first, last


def active_rules(
    repository: RuleRepository, labels: list[str], features: list[str] | None = None
) -> list[tuple[RuleRecord, Rule]]:
    """The active rules of ``labels``, oldest first, each parsed again with its names checked
    against ``features`` (when given): a StoredRuleError names a rule that cannot be used."""
    records = repository.search(
        status="active", sort="created_at", descending=False, limit=1000
    ).items
    return [
        (record, read_rule(record, features, labels))
        for record in records
        if record.label in labels
    ]


@dataclass
class Proposal:
    mining_windows: tuple[date, date]
    llm: LLMOutcome = field(default_factory=lambda: LLMOutcome(status="not run"))
    created: list[RuleRecord] = field(default_factory=list)
    duplicates: list[RuleRecord] = field(default_factory=list)
    rejected: list[RuleRecord] = field(default_factory=list)
    patterns: int = 0


def propose(
    data: RuleData,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    model_info: dict[str, Any],
    run_id: str | None,
) -> Proposal:
    mining, _ = split_windows(data.frame, config.mining_share)
    features = data.features
    report = Proposal(mining_windows=date_range(mining, "mine"))
    miner = MinerSettings(**config.symbolic.model_dump())
    patterns_for_prompt = []
    for label in labels:
        patterns = find_patterns(mining.drop_nulls([f"error_{label}"]), features, label, miner)
        report.patterns += len(patterns)
        patterns_for_prompt += [
            {
                "label": label,
                "condition": p.condition,
                "mean_residual": round(p.mean_residual, 6),
                "rows": p.support,
                "q_value": float(f"{p.q_value:.3g}"),
            }
            for p in patterns[:20]
        ]
        for candidate in mine_rules(mining, features, label, miner):
            _store(
                report,
                repository,
                NewRule(
                    name=candidate.name,
                    definition=candidate.definition,
                    fingerprint=candidate.fingerprint,
                    label=label,
                    source="symbolic",
                    description=candidate.description,
                    confidence=candidate.confidence,
                    impact=candidate.impact,
                    explanation=f"mined from {candidate.pattern.support} windows' residuals",
                    details={
                        "q_value": candidate.pattern.q_value,
                        "effect_size": candidate.pattern.effect_size,
                    },
                ),
                run_id,
            )
    context = {
        **model_info,
        "label_names": labels,
        "feature_names": features,
        "error_patterns": patterns_for_prompt,
        "mining_windows": [str(report.mining_windows[0]), str(report.mining_windows[1])],
    }
    report.llm = generate(config.llm, context, features, labels)
    for proposal, rule in report.llm.accepted:
        _store(
            report,
            repository,
            NewRule(
                name=(proposal.name or rule.canonical())[:200],
                definition=rule.canonical(),
                fingerprint=rule.fingerprint,
                label=rule.adjustment.label,
                source="llm",
                description=proposal.impact[:500],
                confidence=proposal.confidence,
                explanation=proposal.explanation,
            ),
            run_id,
        )
    for proposal, reason in report.llm.rejected:
        record, created = repository.add(
            NewRule(
                name=(proposal.name or "invalid LLM rule")[:200],
                definition=proposal.definition[:2000],
                fingerprint="invalid:"
                + hashlib.sha256(proposal.definition.encode()).hexdigest()[:16],
                label="",
                source="llm",
                description=reason[:500],
                explanation=proposal.explanation,
                status="rejected",
                details={"rejected_because": reason},
            ),
            reason=f"rejected at parse: {reason}",
            run_id=run_id,
        )
        if created:
            report.rejected.append(record)
    return report


def _store(report: Proposal, repository: RuleRepository, rule: NewRule, run_id: str | None) -> None:
    record, created = repository.add(
        rule, reason=f"proposed by the {rule.source} generator", run_id=run_id
    )
    (report.created if created else report.duplicates).append(record)


@dataclass(frozen=True)
class Evaluated:
    record: RuleRecord
    accepted: bool
    metrics: dict[str, float]
    fired_rows: int


@dataclass(frozen=True)
class DraftEvaluation:
    """What ``evaluate_drafts`` did: the scored drafts, the window they were scored on, and
    the drafts that could not be read back (rejected with the reason)."""

    results: list[Evaluated]
    window: tuple[date, date]
    unusable: list[RuleRecord]


def _readable(
    records: list[RuleRecord], data: RuleData, labels: list[str]
) -> tuple[list[tuple[RuleRecord, Rule]], list[tuple[RuleRecord, StoredRuleError]]]:
    """Each record parsed again against today's features and labels, or the reason it fails."""
    usable, unusable = [], []
    for record in records:
        try:
            usable.append((record, read_rule(record, data.features, labels)))
        except StoredRuleError as error:
            unusable.append((record, error))
    return usable, unusable


def evaluate_drafts(
    data: RuleData,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    run_id: str | None,
) -> DraftEvaluation:
    """Score every draft on the evaluation windows; each becomes accepted or rejected. A draft
    that no longer reads back (a feature gone) is rejected with the reason, not scored."""
    _, evaluation = split_windows(data.frame, config.mining_share)
    window = date_range(evaluation, "evaluate")
    drafts = [
        r
        for r in repository.search(status="draft", limit=1000, descending=False).items
        if r.label in labels
    ]
    usable, unusable = _readable(drafts, data, labels)
    for record, error in unusable:
        repository.set_status(record.rule_id, "rejected", reason=str(error), run_id=run_id)
    settings = config.evaluation
    scores = evaluate_rules(
        evaluation,
        [rule for _, rule in usable],
        resamples=settings.resamples,
        block=settings.block_days,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    results = []
    for (record, _), score in zip(usable, scores, strict=True):
        repository.record_evaluation(
            record.rule_id,
            record.version,
            window=window,
            rows=evaluation.height,
            fired_rows=score.fired_rows,
            metrics=score.metrics(),
            ci=(score.ci_low, score.ci_high),
            accepted=score.accepted,
            run_id=run_id,
        )
        interval = f"RMSE improvement {score.improvement:+.3g}, {settings.confidence:.0%} CI [{score.ci_low:+.3g}, {score.ci_high:+.3g}]"
        repository.set_status(record.rule_id, "evaluated", reason=interval, run_id=run_id)
        verdict = "accepted" if score.accepted else "rejected"
        why = (
            "the interval's lower bound is above zero"
            if score.accepted
            else "the interval reaches zero or below"
        )
        repository.set_status(record.rule_id, verdict, reason=f"{interval}: {why}", run_id=run_id)
        results.append(
            Evaluated(
                repository.get(record.rule_id), score.accepted, score.metrics(), score.fired_rows
            )
        )
    return DraftEvaluation(
        results, window, [repository.get(record.rule_id) for record, _ in unusable]
    )


@dataclass
class Promotion:
    active: list[RuleRecord]
    retired: list[RuleRecord]
    conflicts: list[tuple[str, str, int]]
    rmse_before: float | None = None
    rmse_after: float | None = None


def _rmse(frame: pl.DataFrame, forecast: pl.Expr, label: str) -> float:
    """RMSE of ``forecast`` against ``actual_<label>`` over the rows where it is known."""
    usable = frame.filter(pl.col(f"actual_{label}").is_not_null())
    return float(usable.select(((forecast - pl.col(f"actual_{label}")) ** 2).mean().sqrt()).item())


def promote(
    data: RuleData,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    run_id: str | None,
) -> Promotion:
    """Greedy forward selection over accepted and active rules on the evaluation windows. A
    rule that no longer reads back (a feature gone) is retired with the reason."""
    _, evaluation = split_windows(data.frame, config.mining_share)
    candidates = [
        r
        for r in repository.search(
            status=["accepted", "active"], limit=1000, descending=False
        ).items
        if r.label in labels
    ]
    usable, unusable = _readable(candidates, data, labels)
    pool = [record for record, _ in usable]
    rules = [rule for _, rule in usable]
    chosen = set(
        select_rules(evaluation, rules, list(range(len(pool))), config.evaluation.max_active)
    )
    clashes = [
        (pool[c.first].rule_id, pool[c.second].rule_id, c.overlap_rows)
        for c in conflicts(evaluation, rules)
    ]
    result = Promotion(active=[], retired=[], conflicts=clashes)
    for record, error in unusable:
        result.retired.append(
            repository.set_status(record.rule_id, "retired", reason=str(error), run_id=run_id)
        )
    for index, record in enumerate(pool):
        if index in chosen and record.status == "accepted":
            record = repository.set_status(
                record.rule_id, "active", reason="chosen by greedy forward selection", run_id=run_id
            )
        elif index not in chosen:
            record = repository.set_status(
                record.rule_id,
                "retired",
                reason="not chosen: adds nothing or conflicts with a chosen rule",
                run_id=run_id,
            )
        (result.active if index in chosen else result.retired).append(record)
    if pool:
        label = labels[0]
        adjusted = pl.col(f"forecast_{label}")
        for index in sorted(chosen):
            if rules[index].adjustment.label == label:
                adjusted = adjusted_expr(rules[index], adjusted)
        result.rmse_before = _rmse(evaluation, pl.col(f"forecast_{label}"), label)
        result.rmse_after = _rmse(evaluation, adjusted, label)
    return result
