"""The rule repository on real SQLite and PostgreSQL, including concurrent writers."""

import multiprocessing
import subprocess
import sys
import time
import traceback
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from pulse_assets.rules.language import parse
from pulse_assets.rules.repository import (
    InvalidTransitionError,
    NewRule,
    RuleNotFoundError,
    RuleRepository,
    RuleRepositoryError,
    StoredRuleError,
    read_rule,
    transition_path,
)
from pulse_assets.storage.sql import connect, rules


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
        InvalidTransitionError, match=r"cannot go from retired to active; allowed: \['draft'\]"
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


def test_move_takes_the_shortest_allowed_chain_and_move_many_is_all_or_nothing(engine):
    assert transition_path("active", "evaluated") == ["active", "retired", "draft", "evaluated"]
    assert transition_path("draft", "draft") == ["draft"]
    with pytest.raises(InvalidTransitionError, match="no chain of transitions"):
        transition_path("draft", "deleted")
    repo = RuleRepository(engine)
    record, _ = repo.add(new_rule("IF a > 3 THEN y += 0.1"))
    moved = repo.move(record.rule_id, "active", reason="round 2016-01-01: chosen", run_id="r1")
    assert moved.status == "active"
    assert repo.move(record.rule_id, "active", reason="again").status == "active"  # no-op
    steps = [(e["from_status"], e["to_status"], e["reason"]) for e in repo.events(record.rule_id)]
    assert steps[1:] == [
        ("draft", "evaluated", "round 2016-01-01: chosen"),
        ("evaluated", "accepted", "round 2016-01-01: chosen"),
        ("accepted", "active", "round 2016-01-01: chosen"),
    ]
    other, _ = repo.add(new_rule("IF b > 3 THEN y += 0.1"))
    with pytest.raises(RuleNotFoundError, match="rule nosuchrule not found"):
        repo.move_many([(other.rule_id, "rejected", "first"), ("nosuchrule", "rejected", "second")])
    assert repo.get(other.rule_id).status == "draft"  # the first move was rolled back
    assert len(repo.events(other.rule_id)) == 1


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


def test_text_search_escapes_like_wildcards(engine):
    repo = RuleRepository(engine)
    for n, name in enumerate(["a_b rule", "axb rule", "100% sure", "1000 sure", "back/slash"]):
        repo.add(new_rule(f"IF a > {n} THEN y += 0.1", name=name))
    assert [r.name for r in repo.search(text="a_b").items] == ["a_b rule"]
    assert [r.name for r in repo.search(text="0%").items] == ["100% sure"]
    assert [r.name for r in repo.search(text="k/s").items] == ["back/slash"]
    assert [r.name for r in repo.search(text="%").items] == ["100% sure"]
    assert [r.name for r in repo.search(text="_").items] == ["a_b rule"]
    assert repo.search(text="//").total == 0


def test_an_update_cannot_take_the_fingerprint_of_another_live_rule(engine):
    repo = RuleRepository(engine)
    first, _ = repo.add(new_rule("IF a > 1 THEN y += 0.1"))
    second, _ = repo.add(new_rule("IF a > 2 THEN y += 0.1"))
    with pytest.raises(RuleRepositoryError, match=f"live rule {first.rule_id} .* already has it"):
        repo.update(
            second.rule_id,
            {"definition": "IF 1 < a THEN y += 0.1", "fingerprint": first.fingerprint},
            reason="same as the first",
        )
    assert [r.version for r in repo.history(second.rule_id)] == [1]
    repo.delete(first.rule_id, reason="make room")
    moved = repo.update(
        second.rule_id, {"fingerprint": first.fingerprint}, reason="now the only one"
    )
    assert repo.find_fingerprint(first.fingerprint) == moved and moved.version == 2
    again, created = repo.add(new_rule("IF a > 2 THEN y += 0.1"))
    assert created and again.rule_id != second.rule_id  # v1's fingerprint is no longer live


def test_stored_rules_are_read_back_with_their_names_checked(engine):
    repo = RuleRepository(engine)
    record, _ = repo.add(new_rule("IF vol_z > 2 AND gone_feature < 1 THEN y *= 0.9"))
    assert read_rule(record, ["vol_z", "gone_feature"], ["y"]).features() == {
        "vol_z",
        "gone_feature",
    }
    with pytest.raises(
        StoredRuleError,
        match=rf"stored rule {record.rule_id} v1 \(draft, .*unknown feature\(s\) \['gone_feature'\].*Retire or delete",
    ):
        read_rule(repo.get(record.rule_id), ["vol_z"], ["y"])
    with pytest.raises(StoredRuleError, match=rf"{record.rule_id} v1 .*unknown label 'y'"):
        read_rule(record, ["vol_z", "gone_feature"], ["z"])
    broken = repo.update(record.rule_id, {"definition": "IF vol_z > 1e309 THEN y *= 2"}, reason="x")
    with pytest.raises(StoredRuleError, match=rf"{record.rule_id} v2 .*1e309 is too large"):
        read_rule(broken)


UPDATES_PER_WRITER = 4


def _add_then_update(url, definition, barrier, results, writer):
    """One writer process: add the shared rule at the same moment as the others, then update
    it; every outcome (or the error) goes back through ``results``."""
    try:
        repo = RuleRepository(connect(url))
        barrier.wait(timeout=120)
        record, created = repo.add(new_rule(definition, name=f"writer {writer}"))
        for n in range(UPDATES_PER_WRITER):
            repo.update(record.rule_id, {"explanation": f"{writer}-{n}"}, reason=f"w{writer}")
        results.put((writer, record.rule_id, created, None))
    except Exception:  # reported to the parent, which fails the test with it
        results.put((writer, None, False, traceback.format_exc()))


def test_concurrent_adds_of_one_rule_store_it_once_and_lose_no_version(fresh_url):
    engine = connect(fresh_url)
    definition = "IF a > 2 AND b < 1 THEN y *= 0.9"
    writers = 8
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [
        context.Process(target=_add_then_update, args=(fresh_url, definition, barrier, results, w))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert [error for *_, error in outcomes if error] == []
    assert {rule_id for _, rule_id, _, _ in outcomes} == {outcomes[0][1]}
    assert sum(created for _, _, created, _ in outcomes) == 1
    repo = RuleRepository(engine)
    fingerprint = parse(definition).fingerprint
    with engine.connect() as connection:
        live = connection.execute(
            sa.select(rules.c.rule_id, rules.c.version).where(
                rules.c.live_fingerprint == fingerprint
            )
        ).all()
        owners = connection.execute(
            sa.select(rules.c.rule_id).where(rules.c.fingerprint == fingerprint).distinct()
        ).all()
    rule_id = outcomes[0][1]
    total = 1 + writers * UPDATES_PER_WRITER
    assert live == [(rule_id, total)] and owners == [(rule_id,)]
    history = repo.history(rule_id)
    assert [r.version for r in history] == list(range(1, total + 1))
    assert sorted(r.explanation for r in history[1:]) == sorted(
        f"{w}-{n}" for w in range(writers) for n in range(UPDATES_PER_WRITER)
    )
    assert [e["to_status"] for e in repo.events(rule_id)].count("draft") == total
    assert repo.search().total == 1
    engine.dispose()


def _legacy_rules_table(url: str) -> sa.Engine:
    """A store whose rules table has the shape it had before live fingerprints existed."""
    engine = connect(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX uq_rules_live_fingerprint"))
        connection.execute(sa.text("ALTER TABLE rules DROP COLUMN live_fingerprint"))
    return engine


def _legacy_row(connection, rule_id, version, fingerprint, status, created, deleted=None):
    connection.execute(
        sa.insert(rules).values(
            rule_id=rule_id,
            version=version,
            name=rule_id,
            description="",
            definition=f"IF a > {version} THEN y += 1",
            fingerprint=fingerprint,
            label="y",
            source="symbolic",
            status=status,
            confidence="low",
            impact=None,
            explanation="",
            details={},
            changes={},
            created_at=created,
            updated_at=created,
            deleted_at=deleted,
        )
    )


def test_a_store_from_before_unique_fingerprints_is_upgraded_keeping_one_copy(fresh_url):
    engine = _legacy_rules_table(fresh_url)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        _legacy_row(connection, "oldest_draft", 1, "X", "draft", t0)
        _legacy_row(connection, "newer_draft", 1, "X", "draft", t0 + timedelta(days=1))
        _legacy_row(connection, "the_active", 1, "X", "accepted", t0 + timedelta(days=2))
        _legacy_row(connection, "the_active", 2, "X", "active", t0 + timedelta(days=2))
        _legacy_row(connection, "moved_away", 1, "X", "draft", t0)
        _legacy_row(connection, "moved_away", 2, "Z", "draft", t0)
        _legacy_row(connection, "deleted_y", 1, "Y", "draft", t0, deleted=t0)
        _legacy_row(connection, "live_y", 1, "Y", "draft", t0 + timedelta(days=3))
    engine.dispose()

    engine = connect(fresh_url)
    repo = RuleRepository(engine)
    assert repo.find_fingerprint("X").rule_id == "the_active"
    assert repo.find_fingerprint("Y").rule_id == "live_y"
    assert repo.find_fingerprint("Z").rule_id == "moved_away"
    for loser in ("oldest_draft", "newer_draft"):
        assert repo.get(loser, include_deleted=True).deleted_at is not None
        (event,) = repo.events(loser)
        assert event["to_status"] == "deleted" and event["reason"].startswith(
            "duplicate of rule the_active (same fingerprint X"
        )
    assert [r.version for r in repo.history("the_active")] == [1, 2]
    assert repo.search().total == 3
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.update(rules)
            .where(rules.c.rule_id == "live_y")
            .values(fingerprint="X", live_fingerprint="X")
        )
    engine.dispose()

    engine = connect(fresh_url)  # opening it again changes nothing
    assert len(RuleRepository(engine).events("oldest_draft")) == 1
    engine.dispose()
