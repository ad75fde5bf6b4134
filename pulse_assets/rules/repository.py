"""Versioned rule repository on SQLAlchemy (the plan's RuleRepository).

Every content change is a new version whose ``changes`` say what changed; a status change
updates the latest version and writes an audit event. Writes are race-free through the
database's constraints, not through checks made before writing:

- Version numbers: a new version first takes the current latest row (clearing its
  ``live_fingerprint`` where it still holds it), then inserts the next number under a unique
  (rule_id, version) constraint; a concurrent writer finds nothing to take, or collides, and
  retries with the next number, so no version is lost or duplicated.
- Fingerprints: ``live_fingerprint`` is unique, so two live rules never share one. ``add`` of
  a rule that a concurrent writer has just stored collides and returns that rule instead.

Queries use bound parameters only (SQLAlchemy Core); text search escapes LIKE wildcards.
Stored definitions are parsed again, names checked, before a run uses them (``read_rule``).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import sqlalchemy as sa

from pulse_assets.errors import PulseError
from pulse_assets.rules.language import Rule, RuleSyntaxError, UnknownNameError, parse
from pulse_assets.storage.sql import rule_evaluations, rule_events, rules

Status = Literal["draft", "evaluated", "accepted", "rejected", "active", "retired"]
Confidence = Literal["low", "medium", "high"]
TRANSITIONS: dict[str, set[str]] = {
    "draft": {"evaluated", "rejected"},
    "evaluated": {"accepted", "rejected"},
    "accepted": {"active", "retired"},
    "active": {"retired"},
    # a later round of the walk-forward that mines the same rule again (same fingerprint)
    # proposes it afresh: it is judged again on that round's data, with its history kept
    "rejected": {"draft"},
    "retired": {"draft"},
}
EDITABLE = {
    "name",
    "description",
    "definition",
    "fingerprint",
    "label",
    "confidence",
    "impact",
    "explanation",
    "details",
}
SORTABLE = {"created_at", "updated_at", "name", "impact", "version", "status"}
VERSION_RETRIES = 20


class RuleRepositoryError(PulseError):
    """A repository operation was refused: what, for which rule, and why."""


class RuleNotFoundError(RuleRepositoryError):
    pass


class InvalidTransitionError(RuleRepositoryError):
    pass


class StoredRuleError(RuleRepositoryError):
    """A stored definition no longer parses, or names a feature or label that is gone."""


@dataclass(frozen=True)
class NewRule:
    name: str
    definition: str
    fingerprint: str
    label: str
    source: Literal["symbolic", "llm", "manual"]
    description: str = ""
    confidence: Confidence = "low"
    impact: float | None = None
    explanation: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    status: Status = "draft"


@dataclass(frozen=True)
class RuleRecord:
    rule_id: str
    version: int
    name: str
    description: str
    definition: str
    fingerprint: str
    label: str
    source: str
    status: str
    confidence: str
    impact: float | None
    explanation: str
    details: dict[str, Any]
    changes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class Page:
    items: list[RuleRecord]
    total: int


def _now() -> datetime:
    return datetime.now(UTC)


def _record(row: Any) -> RuleRecord:
    return RuleRecord(**{k: row[k] for k in RuleRecord.__dataclass_fields__})


def read_rule(
    record: RuleRecord, features: Iterable[str] | None = None, labels: Iterable[str] | None = None
) -> Rule:
    """The stored definition parsed again, with its names checked when ``features`` and
    ``labels`` are given: a rule is used only as what it reads back as today."""
    try:
        rule = parse(record.definition, features, labels)
    except (RuleSyntaxError, UnknownNameError) as error:
        raise StoredRuleError(
            f"stored rule {record.rule_id} v{record.version} ({record.status}, "
            f"{record.definition[:120]!r}) cannot be used: {str(error).splitlines()[0]}. "
            "Retire or delete that rule, or restore what it names"
        ) from error
    if rule.adjustment.label != record.label:
        raise StoredRuleError(
            f"stored rule {record.rule_id} v{record.version}: its definition adjusts "
            f"{rule.adjustment.label!r} but the record says {record.label!r}; update the rule "
            "so that both agree"
        )
    return rule


def _contains(text: str) -> str:
    """A LIKE pattern (escape character ``/``) matching ``text`` literally, anywhere."""
    escaped = text.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


class RuleRepository:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- reads --
    def _latest_versions(self) -> sa.Subquery:
        return (
            sa.select(rules.c.rule_id, sa.func.max(rules.c.version).label("latest"))
            .group_by(rules.c.rule_id)
            .subquery()
        )

    def get(
        self, rule_id: str, version: int | None = None, include_deleted: bool = False
    ) -> RuleRecord:
        query = sa.select(rules).where(rules.c.rule_id == rule_id)
        query = (
            query.where(rules.c.version == version)
            if version is not None
            else query.order_by(rules.c.version.desc()).limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None or (row["deleted_at"] is not None and not include_deleted):
            what = (
                f"version {version} of rule {rule_id}" if version is not None else f"rule {rule_id}"
            )
            raise RuleNotFoundError(f"{what} not found{' (deleted)' if row is not None else ''}")
        return _record(row)

    def history(self, rule_id: str) -> list[RuleRecord]:
        query = sa.select(rules).where(rules.c.rule_id == rule_id).order_by(rules.c.version)
        with self.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def find_fingerprint(self, fingerprint: str) -> RuleRecord | None:
        """The live rule whose latest version has this fingerprint, if any (at most one)."""
        query = sa.select(rules).where(rules.c.live_fingerprint == fingerprint)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _record(row) if row else None

    def search(
        self,
        *,
        text: str | None = None,
        status: str | list[str] | None = None,
        source: str | None = None,
        label: str | None = None,
        created_from: date | datetime | None = None,
        created_to: date | datetime | None = None,
        latest_only: bool = True,
        include_deleted: bool = False,
        sort: str = "created_at",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        if sort not in SORTABLE:
            raise RuleRepositoryError(
                f"cannot sort rules by {sort!r}; choose one of {sorted(SORTABLE)}"
            )
        if not 1 <= limit <= 1000 or offset < 0:
            raise RuleRepositoryError(
                f"limit must be 1..1000 and offset >= 0, got {limit} and {offset}"
            )
        conditions = []
        if text:
            pattern = _contains(text)
            conditions.append(
                sa.or_(
                    sa.func.lower(rules.c.name).like(pattern, escape="/"),
                    sa.func.lower(rules.c.description).like(pattern, escape="/"),
                )
            )
        if status:
            conditions.append(rules.c.status.in_([status] if isinstance(status, str) else status))
        if source:
            conditions.append(rules.c.source == source)
        if label:
            conditions.append(rules.c.label == label)
        if created_from:
            conditions.append(rules.c.created_at >= _as_datetime(created_from))
        if created_to:
            conditions.append(rules.c.created_at <= _as_datetime(created_to, end_of_day=True))
        if not include_deleted:
            conditions.append(rules.c.deleted_at.is_(None))
        base = sa.select(rules)
        if latest_only:
            latest = self._latest_versions()
            base = base.join(
                latest,
                sa.and_(rules.c.rule_id == latest.c.rule_id, rules.c.version == latest.c.latest),
            )
        base = base.where(*conditions)
        order = rules.c[sort].desc() if descending else rules.c[sort].asc()
        with self.engine.connect() as connection:
            total = connection.execute(
                sa.select(sa.func.count()).select_from(base.subquery())
            ).scalar_one()
            rows = (
                connection.execute(base.order_by(order, rules.c.id).limit(limit).offset(offset))
                .mappings()
                .all()
            )
        return Page(items=[_record(row) for row in rows], total=total)

    def events(self, rule_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(rule_events)
            .where(rule_events.c.rule_id == rule_id)
            .order_by(rule_events.c.id)
        )
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def evaluations(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Stored evaluations, newest first (of one rule, or of all)."""
        query = sa.select(rule_evaluations).order_by(rule_evaluations.c.id.desc())
        if rule_id is not None:
            query = query.where(rule_evaluations.c.rule_id == rule_id)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    # -- writes --
    def add(
        self, rule: NewRule, *, reason: str = "created", run_id: str | None = None
    ) -> tuple[RuleRecord, bool]:
        """Store a new rule (version 1). A live rule with the same fingerprint is returned
        instead, unchanged: (record, created). Under concurrent adds of one rule, exactly one
        is created; the unique live fingerprint turns the others into a lookup."""
        for attempt in range(VERSION_RETRIES):
            existing = self.find_fingerprint(rule.fingerprint)
            if existing is not None:
                return existing, False
            now = _now()
            values = {
                **rule.__dict__,
                "rule_id": uuid.uuid4().hex[:12],
                "version": 1,
                "changes": {},
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
                "live_fingerprint": rule.fingerprint,
            }
            try:
                with self.engine.begin() as connection:
                    connection.execute(rules.insert().values(**values))
                    connection.execute(
                        rule_events.insert().values(
                            rule_id=values["rule_id"],
                            version=1,
                            from_status=None,
                            to_status=rule.status,
                            reason=reason,
                            dagster_run_id=run_id,
                            at=now,
                        )
                    )
            except sa.exc.IntegrityError:
                _back_off(attempt)  # another writer stored it first: the next look finds it
                continue
            return self.get(values["rule_id"]), True
        raise RuleRepositoryError(
            f"rule {rule.name!r} (fingerprint {rule.fingerprint}): {VERSION_RETRIES} tries to "
            "store it collided with concurrent writers and found no live copy; retry later"
        )

    def update(
        self, rule_id: str, changes: dict[str, Any], *, reason: str, run_id: str | None = None
    ) -> RuleRecord:
        """A new version with ``changes`` applied; its ``changes`` column says old -> new."""
        unknown = set(changes) - EDITABLE
        if unknown:
            raise RuleRepositoryError(
                f"rule {rule_id}: fields {sorted(unknown)} cannot be updated; editable: {sorted(EDITABLE)}"
            )
        for attempt in range(VERSION_RETRIES):
            current = self.get(rule_id)
            diff = {
                k: [getattr(current, k), v] for k, v in changes.items() if getattr(current, k) != v
            }
            row = {k: getattr(current, k) for k in RuleRecord.__dataclass_fields__} | changes
            row |= {
                "version": current.version + 1,
                "changes": {"reason": reason, "fields": diff},
                "updated_at": _now(),
                "live_fingerprint": row["fingerprint"],
            }
            try:
                with self.engine.begin() as connection:
                    taken = self._take_latest(connection, current)
                    if taken:
                        connection.execute(rules.insert().values(**row))
                        connection.execute(
                            rule_events.insert().values(
                                rule_id=rule_id,
                                version=row["version"],
                                from_status=current.status,
                                to_status=current.status,
                                reason=f"new version: {reason}",
                                dagster_run_id=run_id,
                                at=row["updated_at"],
                            )
                        )
            except sa.exc.IntegrityError:
                self._refuse_taken_fingerprint(rule_id, row["fingerprint"])
                taken = False
            if taken:
                return self.get(rule_id)
            _back_off(attempt)  # a concurrent writer added a version first
        raise RuleRepositoryError(
            f"rule {rule_id}: {VERSION_RETRIES} concurrent writers kept taking the next version; retry later"
        )

    @staticmethod
    def _take_latest(connection: sa.Connection, current: RuleRecord) -> bool:
        """Clear the live fingerprint of ``current`` (locking its row on PostgreSQL); False
        when a concurrent writer has already replaced it by a newer version."""
        taken = connection.execute(
            rules.update()
            .where(
                rules.c.rule_id == current.rule_id,
                rules.c.version == current.version,
                rules.c.live_fingerprint.is_not(None),
            )
            .values(live_fingerprint=None)
        )
        return taken.rowcount == 1

    def _refuse_taken_fingerprint(self, rule_id: str, fingerprint: str) -> None:
        owner = self.find_fingerprint(fingerprint)
        if owner is not None and owner.rule_id != rule_id:
            raise RuleRepositoryError(
                f"rule {rule_id}: cannot take fingerprint {fingerprint}, live rule "
                f"{owner.rule_id} ({owner.definition[:120]!r}) already has it: it is the same "
                "rule written another way. Delete one of them, or change the definition"
            )

    def set_status(
        self, rule_id: str, status: str, *, reason: str, run_id: str | None = None
    ) -> RuleRecord:
        current = self.get(rule_id)
        if status not in TRANSITIONS.get(current.status, set()):
            allowed = sorted(TRANSITIONS.get(current.status, set())) or "none (final)"
            raise InvalidTransitionError(
                f"rule {rule_id} v{current.version}: cannot go from {current.status} to {status}; allowed: {allowed}"
            )
        with self.engine.begin() as connection:
            self._step(connection, current, status, reason, run_id)
        return self.get(rule_id)

    @staticmethod
    def _step(
        connection: sa.Connection,
        current: RuleRecord,
        status: str,
        reason: str,
        run_id: str | None,
    ) -> None:
        """One status change of the latest version, with its audit event, in ``connection``."""
        now = _now()
        updated = connection.execute(
            rules.update()
            .where(
                rules.c.rule_id == current.rule_id,
                rules.c.version == current.version,
                rules.c.status == current.status,
            )
            .values(status=status, updated_at=now)
        )
        if updated.rowcount != 1:
            raise RuleRepositoryError(
                f"rule {current.rule_id} changed while its status was being set; retry"
            )
        connection.execute(
            rule_events.insert().values(
                rule_id=current.rule_id,
                version=current.version,
                from_status=current.status,
                to_status=status,
                reason=reason,
                dagster_run_id=run_id,
                at=now,
            )
        )

    def move(
        self, rule_id: str, status: str, *, reason: str, run_id: str | None = None
    ) -> RuleRecord:
        """Bring the rule to ``status`` by the shortest chain of allowed transitions, each
        audited with ``reason`` (nothing when it is there already). A walk-forward round run
        again finds the rule where a later round left it: the chain says how it got back."""
        self.move_many([(rule_id, status, reason)], run_id=run_id)
        return self.get(rule_id)

    def move_many(
        self, moves: Iterable[tuple[str, str, str]], *, run_id: str | None = None
    ) -> None:
        """``move`` for each (rule id, status, reason), in order, in one transaction: all of
        them or none (a walk-forward round records its decisions together)."""
        with self.engine.begin() as connection:
            for rule_id, status, reason in moves:
                row = (
                    connection.execute(
                        sa.select(rules)
                        .where(rules.c.rule_id == rule_id)
                        .order_by(rules.c.version.desc())
                        .limit(1)
                    )
                    .mappings()
                    .first()
                )
                if row is None or row["deleted_at"] is not None:
                    raise RuleNotFoundError(f"rule {rule_id} not found (or deleted)")
                current = _record(row)
                for step in transition_path(current.status, status)[1:]:
                    self._step(connection, current, step, reason, run_id)
                    current = RuleRecord(**{**current.__dict__, "status": step})

    def delete(self, rule_id: str, *, reason: str, run_id: str | None = None) -> None:
        """Soft delete: every version stays, marked deleted, out of searches."""
        current = self.get(rule_id)
        now = _now()
        with self.engine.begin() as connection:
            connection.execute(
                rules.update()
                .where(rules.c.rule_id == rule_id)
                .values(deleted_at=now, live_fingerprint=None)
            )
            connection.execute(
                rule_events.insert().values(
                    rule_id=rule_id,
                    version=current.version,
                    from_status=current.status,
                    to_status="deleted",
                    reason=reason,
                    dagster_run_id=run_id,
                    at=now,
                )
            )

    def record_evaluations(self, evaluations: Iterable[dict[str, Any]]) -> None:
        """Several evaluations in one transaction: dicts of ``record_evaluation``'s arguments
        (rule_id, version, window, rows, fired_rows, metrics, ci, accepted, run_id)."""
        now = _now()
        rows = [
            {
                "rule_id": e["rule_id"],
                "version": e["version"],
                "window_start": e["window"][0],
                "window_end": e["window"][1],
                "rows": e["rows"],
                "fired_rows": e["fired_rows"],
                "metrics": e["metrics"],
                "ci_low": e["ci"][0],
                "ci_high": e["ci"][1],
                "accepted": e["accepted"],
                "dagster_run_id": e["run_id"],
                "at": now,
            }
            for e in evaluations
        ]
        if rows:
            with self.engine.begin() as connection:
                connection.execute(rule_evaluations.insert(), rows)

    def record_evaluation(
        self,
        rule_id: str,
        version: int,
        *,
        window: tuple[date, date],
        rows: int,
        fired_rows: int,
        metrics: dict[str, float],
        ci: tuple[float, float],
        accepted: bool,
        run_id: str | None,
    ) -> None:
        self.record_evaluations(
            [
                {
                    "rule_id": rule_id,
                    "version": version,
                    "window": window,
                    "rows": rows,
                    "fired_rows": fired_rows,
                    "metrics": metrics,
                    "ci": ci,
                    "accepted": accepted,
                    "run_id": run_id,
                }
            ]
        )


def transition_path(start: str, target: str) -> list[str]:
    """The shortest chain of statuses from ``start`` to ``target`` (both included) that
    TRANSITIONS allows; an InvalidTransitionError when there is none."""
    paths = {start: [start]}
    frontier = [start]
    while frontier and target not in paths:
        reached = []
        for status in frontier:
            for following in sorted(TRANSITIONS.get(status, set())):
                if following not in paths:
                    paths[following] = [*paths[status], following]
                    reached.append(following)
        frontier = reached
    if target not in paths:
        raise InvalidTransitionError(f"no chain of transitions leads from {start} to {target}")
    return paths[target]


def _back_off(attempt: int) -> None:
    """A short random pause before retrying a write that lost a race, longer each time."""
    time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))


def _as_datetime(value: date | datetime, end_of_day: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = datetime.combine(value, datetime.max.time() if end_of_day else datetime.min.time())
    return moment.replace(tzinfo=UTC)
