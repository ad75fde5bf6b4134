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
from pulse_assets.rules.language import Rule, adjusted_expr, parse
from pulse_assets.rules.llm import LLMOutcome, generate
from pulse_assets.rules.repository import NewRule, RuleRecord, RuleRepository
from pulse_assets.rules.symbolic import MinerSettings, find_patterns, mine_rules
from pulse_assets.storage import PartitionStore
from pulse_assets.training.dataset import TrainingDataError

RETRODICTION_TABLE, FEATURES_TABLE = "evaluation/retrodiction", "features/daily_features"


@dataclass(frozen=True)
class RuleData:
    """The champion's out-of-sample retrodiction windows joined with the features of each day."""

    frame: pl.DataFrame
    features: list[str]


def rule_frame(store: PartitionStore, champion_version: str, config: RulesConfig) -> RuleData:
    """The champion's out-of-sample retrodiction windows of the last ``window_days``, with features."""
    keys = store.keys(RETRODICTION_TABLE)
    if not keys:
        raise TrainingDataError(
            "no retrodiction partitions in the store: backfill evaluation/retrodiction first"
        )
    last = date.fromisoformat(keys[-1])
    first = (last - timedelta(days=config.window_days - 1)).isoformat()
    windows = store.read_range(RETRODICTION_TABLE, first, last.isoformat())
    windows = windows.filter((pl.col("model_version") == champion_version) & ~pl.col("in_sample"))
    if windows.height == 0:
        raise TrainingDataError(
            f"no out-of-sample retrodiction windows of champion {champion_version} "
            f"between {first} and {last}: backfill evaluation/retrodiction for it"
        )
    features = store.read_range(FEATURES_TABLE, first, last.isoformat())
    names = [c for c in feature_columns(features) if c not in windows.columns]
    return RuleData(
        windows.join(features.select("date", *names), on="date", how="left").sort("date"), names
    )


def split_windows(frame: pl.DataFrame, mining_share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Earlier windows mine, later windows evaluate: a rule is never tested where it was found."""
    cut = int(frame.height * mining_share)
    return frame.head(cut), frame.slice(cut)


def active_rules(repository: RuleRepository, labels: list[str]) -> list[tuple[RuleRecord, Rule]]:
    records = repository.search(
        status="active", sort="created_at", descending=False, limit=1000
    ).items
    return [(record, parse(record.definition)) for record in records if record.label in labels]


@dataclass
class Proposal:
    created: list[RuleRecord] = field(default_factory=list)
    duplicates: list[RuleRecord] = field(default_factory=list)
    rejected: list[RuleRecord] = field(default_factory=list)
    llm: LLMOutcome | None = None
    mining_windows: tuple[date, date] | None = None
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
    report = Proposal(mining_windows=(mining["date"].min(), mining["date"].max()))
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
                confidence=proposal.confidence
                if proposal.confidence in ("low", "medium", "high")
                else "low",
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


def evaluate_drafts(
    frame: pl.DataFrame,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    run_id: str | None,
) -> tuple[list[Evaluated], tuple[date, date]]:
    """Score every draft on the evaluation windows; each becomes accepted or rejected."""
    _, evaluation = split_windows(frame, config.mining_share)
    window = (evaluation["date"].min(), evaluation["date"].max())
    drafts = [
        r
        for r in repository.search(status="draft", limit=1000, descending=False).items
        if r.label in labels
    ]
    rules = [parse(r.definition) for r in drafts]
    settings = config.evaluation
    scores = evaluate_rules(
        evaluation,
        rules,
        resamples=settings.resamples,
        block=settings.block_days,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    results = []
    for record, score in zip(drafts, scores, strict=True):
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
    return results, window


@dataclass
class Promotion:
    active: list[RuleRecord]
    retired: list[RuleRecord]
    conflicts: list[tuple[str, str, int]]
    rmse_before: float | None = None
    rmse_after: float | None = None


def promote(
    frame: pl.DataFrame,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    run_id: str | None,
) -> Promotion:
    """Greedy forward selection over accepted and active rules on the evaluation windows."""
    _, evaluation = split_windows(frame, config.mining_share)
    pool = [
        r
        for r in repository.search(
            status=["accepted", "active"], limit=1000, descending=False
        ).items
        if r.label in labels
    ]
    rules = [parse(r.definition) for r in pool]
    chosen = set(
        select_rules(evaluation, rules, list(range(len(pool))), config.evaluation.max_active)
    )
    clashes = [
        (pool[c.first].rule_id, pool[c.second].rule_id, c.overlap_rows)
        for c in conflicts(evaluation, rules)
    ]
    result = Promotion(active=[], retired=[], conflicts=clashes)
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
        usable = evaluation.filter(pl.col(f"actual_{label}").is_not_null())
        before = ((usable[f"forecast_{label}"] - usable[f"actual_{label}"]) ** 2).mean() ** 0.5
        adjusted = pl.col(f"forecast_{label}")
        for index in sorted(chosen):
            if rules[index].adjustment.label == label:
                adjusted = adjusted_expr(rules[index], adjusted)
        after = usable.select(((adjusted - pl.col(f"actual_{label}")) ** 2).mean().sqrt()).item()
        result.rmse_before, result.rmse_after = float(before), float(after)
    return result
