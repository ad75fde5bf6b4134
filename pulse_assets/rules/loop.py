"""Proposing rules, framework-free: the symbolic miner and the LLM on one round's mining days.

The walk-forward that judges, activates and retires them round by round is
``pulse_assets.rules.rounds``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pulse_assets.config import RulesConfig
from pulse_assets.rules.language import Rule
from pulse_assets.rules.llm import LLMOutcome, generate
from pulse_assets.rules.repository import (
    NewRule,
    RuleRecord,
    RuleRepository,
    StoredRuleError,
    read_rule,
)
from pulse_assets.rules.symbolic import MinerSettings, find_patterns, mine_rules, mining_rows


def readable(
    records: list[RuleRecord], features: list[str], labels: list[str]
) -> tuple[list[tuple[RuleRecord, Rule]], list[tuple[RuleRecord, StoredRuleError]]]:
    """Each record parsed again against today's features and labels, or the reason it fails."""
    usable, unusable = [], []
    for record in records:
        try:
            usable.append((record, read_rule(record, features, labels)))
        except StoredRuleError as error:
            unusable.append((record, error))
    return usable, unusable


@dataclass
class Proposal:
    """What the generators proposed: ``created`` new drafts, ``duplicates`` the stored rules
    they proposed again (same fingerprint), ``rejected`` the LLM's unreadable rules."""

    llm: LLMOutcome = field(default_factory=lambda: LLMOutcome(status="not run"))
    created: list[RuleRecord] = field(default_factory=list)
    duplicates: list[RuleRecord] = field(default_factory=list)
    rejected: list[RuleRecord] = field(default_factory=list)
    patterns: int = 0

    def proposed(self) -> list[RuleRecord]:
        """Every readable rule proposed, new or stored before, once each, in order."""
        seen: dict[str, RuleRecord] = {}
        for record in [*self.created, *self.duplicates]:
            seen.setdefault(record.rule_id, record)
        return list(seen.values())


def error_patterns(
    mining: pl.DataFrame, features: list[str], labels: list[str], config: RulesConfig
) -> dict[str, list]:
    """The significant error patterns of each label on the mining days (symbolic miner)."""
    miner = MinerSettings(**config.symbolic.model_dump())
    return {
        label: find_patterns(mining_rows(mining, label), features, label, miner) for label in labels
    }


def propose(
    mining: pl.DataFrame,
    features: list[str],
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    context: dict[str, Any],
    run_id: str | None,
) -> Proposal:
    """Mine ``mining`` (days with ``forecast_/actual_/error_<label>`` and the features) for
    correction rules, ask the LLM (when a key is set) with ``context`` plus the patterns found,
    and store every proposal: new rules as drafts, unreadable LLM rules as rejected."""
    report = Proposal()
    miner = MinerSettings(**config.symbolic.model_dump())
    patterns_for_prompt = []
    for label, patterns in error_patterns(mining, features, labels, config).items():
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
        for candidate in mine_rules(mining, features, label, miner, patterns):
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
                    explanation=f"mined from {candidate.pattern.support} days' residuals",
                    details={
                        "q_value": candidate.pattern.q_value,
                        "effect_size": candidate.pattern.effect_size,
                    },
                ),
                run_id,
            )
    prompt = {
        **context,
        "label_names": labels,
        "feature_names": features,
        "error_patterns": patterns_for_prompt,
    }
    report.llm = generate(config.llm, prompt, features, labels)
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
