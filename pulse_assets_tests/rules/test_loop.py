"""Proposing rules on real S&P 500 days with a planted error pattern, against real SQLite and
PostgreSQL repositories: the miner finds the pattern, stored rules proposed again are found
again, and a rule in force that no longer reads back is retired with the reason."""

from __future__ import annotations

import polars as pl

from pulse_assets.config import RulesConfig
from pulse_assets.rules.language import parse
from pulse_assets.rules.loop import propose
from pulse_assets.rules.repository import NewRule, RuleRepository
from pulse_assets.rules.rounds import STATE_SCHEMA, run_round
from pulse_assets_tests.rules.rounds_data import FEATURES, LABEL, config, history, month
from pulse_assets_tests.rules.test_mining_and_evaluation import windows

MINED = ["volume_z", "noise_feature"]


def test_the_planted_pattern_is_proposed_once_and_found_again(engine, real_raw_frames, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    frame = windows(real_raw_frames, bias_when_high=0.006)
    repository = RuleRepository(engine)
    first = propose(frame, MINED, repository, RulesConfig(), ["y"], {}, "run-1")
    assert first.llm.status.startswith("skipped: OPENAI_API_KEY is not set")
    planted = [  # the model overshoots on high volume: rules that lower it there
        r
        for r in first.created
        if "volume_z >=" in r.definition and parse(r.definition).sign() == -1
    ]
    assert planted and all(r.status == "draft" and r.source == "symbolic" for r in planted)
    assert first.patterns > 0 and not first.duplicates
    again = propose(frame, MINED, repository, RulesConfig(), ["y"], {}, "run-2")
    assert not again.created
    assert {r.rule_id for r in again.proposed()} == {r.rule_id for r in first.proposed()}


def test_a_rule_in_force_that_no_longer_reads_back_is_retired(engine, real_raw_frames, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    repository = RuleRepository(engine)
    definition = f"IF gone_feature > 1 THEN {LABEL} -= 0.001"
    record, _ = repository.add(
        NewRule(
            name="gone",
            definition=definition,
            fingerprint=parse(definition).fingerprint,
            label=LABEL,
            source="manual",
            status="accepted",
        )
    )
    repository.set_status(record.rule_id, "active", reason="set up")
    values = {
        "date": month(2016, 1).start,
        "round": "2016-01-01",
        "rule_id": record.rule_id,
        "label": LABEL,
        "definition": definition,
        "source": "manual",
        "status": "activated",
        "order": 0,
        "activated_round": "2016-01-01",
        "activated_on": month(2016, 1).start,
    }
    previous = pl.DataFrame([{k: values.get(k) for k in STATE_SCHEMA}], schema=STATE_SCHEMA)
    run = run_round(
        history(real_raw_frames),
        FEATURES,
        month(2016, 2),
        previous,
        repository,
        config(),
        [LABEL],
        {},
        "run-3",
    )
    gone = run.state.filter(pl.col("rule_id") == record.rule_id)
    assert gone["status"].to_list() == ["retired"]
    assert "no longer reads back" in gone.item(0, "reason")
    assert "unknown feature(s) ['gone_feature']" in gone.item(0, "reason")
    assert repository.get(record.rule_id).status == "retired"
    event = repository.events(record.rule_id)[-1]
    assert event["reason"].startswith("round 2016-02-01: retired: it no longer reads back")
    assert "1 rule(s) in force no longer read back: retired" in run.decision.outcome
    assert record.rule_id not in {a.entry.rule_id for a in run.decision.in_force()}
