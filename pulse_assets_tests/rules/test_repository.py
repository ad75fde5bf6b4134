"""The rule repository on real SQLite and PostgreSQL, including concurrent writers."""

import subprocess
import sys
import time
from datetime import date, timedelta

import pytest

from pulse_assets.rules.language import parse
from pulse_assets.rules.repository import (
    InvalidTransitionError,
    NewRule,
    RuleNotFoundError,
    RuleRepository,
    RuleRepositoryError,
)


def new_rule(
    definition: str, name: str = "vol spike", source: str = "symbolic", **extra
) -> NewRule:
    rule = parse(definition)
    return NewRule(
        name=name,
        definition=definition,
        fingerprint=rule.fingerprint,
        label=rule.adjustment.label,
        source=source,
        description=extra.pop("description", f"{name} rule"),
        **extra,
    )


def test_add_get_update_history(engine):
    repo = RuleRepository(engine)
    record, created = repo.add(new_rule("IF a > 2 THEN y *= 1.1", impact=0.01))
    assert created and record.version == 1 and record.status == "draft"
    again, created = repo.add(new_rule("if 2 < a then y *= 1.10", name="same rule"))
    assert not created and again.rule_id == record.rule_id  # deduplicated by fingerprint

    v2 = repo.update(
        record.rule_id,
        {"definition": "IF a > 3 THEN y *= 1.1", "fingerprint": "f2"},
        reason="tighter",
    )
    assert v2.version == 2 and v2.changes["fields"]["definition"] == [
        "IF a > 2 THEN y *= 1.1",
        "IF a > 3 THEN y *= 1.1",
    ]
    assert v2.changes["reason"] == "tighter"
    assert repo.get(record.rule_id, version=1).definition == "IF a > 2 THEN y *= 1.1"
    assert [r.version for r in repo.history(record.rule_id)] == [1, 2]
    with pytest.raises(RuleNotFoundError, match="version 9 of rule"):
        repo.get(record.rule_id, version=9)
    with pytest.raises(RuleRepositoryError, match=r"fields \['status'\] cannot be updated"):
        repo.update(record.rule_id, {"status": "active"}, reason="sneaky")


def test_status_lifecycle_and_audit(engine):
    repo = RuleRepository(engine)
    record, _ = repo.add(new_rule("IF a > 2 THEN y += 0.1"))
    for status in ("evaluated", "accepted", "active", "retired"):
        repo.set_status(record.rule_id, status, reason=f"to {status}", run_id="run-9")
    with pytest.raises(
        InvalidTransitionError, match="cannot go from retired to active; allowed: none"
    ):
        repo.set_status(record.rule_id, "active", reason="again")
    other, _ = repo.add(new_rule("IF b > 2 THEN y += 0.1"))
    with pytest.raises(
        InvalidTransitionError,
        match=r"cannot go from draft to active; allowed: \['evaluated', 'rejected'\]",
    ):
        repo.set_status(other.rule_id, "active", reason="skip")
    events = repo.events(record.rule_id)
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        (None, "draft"),
        ("draft", "evaluated"),
        ("evaluated", "accepted"),
        ("accepted", "active"),
        ("active", "retired"),
    ]
    assert events[-1]["dagster_run_id"] == "run-9" and events[-1]["reason"] == "to retired"


def test_search_filters_sort_paginate_and_soft_delete(engine):
    repo = RuleRepository(engine)
    ids = []
    for n in range(6):
        record, _ = repo.add(
            new_rule(
                f"IF a > {n} THEN y += 0.{n + 1}",
                name=f"rule {n}",
                source="llm" if n % 2 else "symbolic",
                impact=float(n),
            )
        )
        ids.append(record.rule_id)
    repo.update(ids[0], {"description": "volatility spike after tweets"}, reason="doc")
    repo.set_status(ids[1], "rejected", reason="invalid")

    assert repo.search(text="SPIKE AFTER").total == 1
    assert repo.search(text="spike", latest_only=False).total == 1  # v1 said "rule 0 rule"
    assert repo.search(source="llm").total == 3
    assert [r.rule_id for r in repo.search(status="rejected").items] == [ids[1]]
    page = repo.search(sort="impact", descending=False, limit=2, offset=2)
    assert page.total == 6 and [r.impact for r in page.items] == [2.0, 3.0]
    assert repo.search(latest_only=False).total == 7
    today = date.today()
    assert repo.search(created_from=today - timedelta(days=1), created_to=today).total == 6
    assert repo.search(created_from=today + timedelta(days=1)).total == 0

    repo.delete(ids[2], reason="obsolete")
    assert repo.search().total == 5
    assert repo.search(include_deleted=True).total == 6
    with pytest.raises(RuleNotFoundError, match="not found \\(deleted\\)"):
        repo.get(ids[2])
    assert repo.get(ids[2], include_deleted=True).deleted_at is not None
    with pytest.raises(RuleRepositoryError, match="cannot sort rules by 'evil; drop table'"):
        repo.search(sort="evil; drop table")


def test_text_search_is_a_bound_parameter(engine):
    repo = RuleRepository(engine)
    repo.add(new_rule("IF a > 2 THEN y += 0.1", name="x'; DROP TABLE rules; --"))
    assert repo.search(text="'; DROP TABLE rules; --").total == 1
    assert repo.search().total == 1


WRITER = """
import sys
from pulse_assets.rules.repository import RuleRepository
from pulse_assets.storage.sql import connect
repo = RuleRepository(connect(sys.argv[1]))
for n in range(int(sys.argv[3])):
    repo.update(sys.argv[2], {"impact": float(n), "explanation": f"{sys.argv[4]}-{n}"}, reason=f"writer {sys.argv[4]}")
"""


def test_concurrent_writers_never_lose_or_duplicate_a_version(postgres_url):
    from pulse_assets.storage.sql import connect

    engine = connect(postgres_url)
    repo = RuleRepository(engine)
    record, _ = repo.add(new_rule(f"IF a > {time.time_ns()} THEN y += 0.1", name="contended"))
    per_writer, writers = 15, 3
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_url, record.rule_id, str(per_writer), str(w)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    versions = [r.version for r in repo.history(record.rule_id)]
    assert versions == list(range(1, per_writer * writers + 2))
    written = sorted(r.explanation for r in repo.history(record.rule_id)[1:])
    assert written == sorted(f"{w}-{n}" for w in range(writers) for n in range(per_writer))
