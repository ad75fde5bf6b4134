"""The ``error_log`` table: every decision of the failure handler, redacted, append only.

Messages are redacted (:class:`~pulse_assets.reliability.failures.Redactor`) and then cut to
``message_chars`` here, whoever writes, so no caller can store a secret by forgetting to.
Each row has a ``dedupe_key``: one decision per failed step, one launch per re-execution,
one alert per run. Recording a second one raises :class:`AlreadyRecorded`, so two handlers
of the same failure cannot both act on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pulse_assets.errors import PulseError, StoreError
from pulse_assets.reliability.failures import (
    DECISIONS,
    LAUNCHES,
    Action,
    Redactor,
    truncate,
)
from pulse_assets.storage.sql import error_log


class AlreadyRecorded(PulseError):
    """The decision was recorded already (by an earlier evaluation of the same failure)."""


@dataclass(frozen=True)
class ErrorLogEntry:
    run_id: str
    root_run_id: str
    job_name: str | None
    step_key: str | None
    partition: str | None
    failure_class: str
    severity: int
    strategy: str
    action: Action
    attempt: int
    exception_type: str | None
    message: str
    source: str | None = None
    batch_size: int | None = None
    due_at: datetime | None = None
    id: int | None = None
    created_at: datetime | None = None

    def dedupe_key(self) -> str:
        if self.action in DECISIONS:
            return f"decision:{self.run_id}:{self.step_key or '-'}"
        if self.action in LAUNCHES:
            return f"launch:{self.root_run_id}:{self.attempt}"
        return f"notify:{self.run_id}"


_FIELDS = [
    "run_id",
    "root_run_id",
    "job_name",
    "step_key",
    "partition",
    "failure_class",
    "severity",
    "strategy",
    "action",
    "attempt",
    "exception_type",
    "message",
    "source",
    "batch_size",
    "due_at",
    "id",
    "created_at",
]


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns: they were written in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _entry(row: sa.Row[Any]) -> ErrorLogEntry:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["action"] = Action(values["action"])
    values["due_at"] = _utc(values["due_at"])
    values["created_at"] = _utc(values["created_at"])
    return ErrorLogEntry(**values)


class ErrorLog:
    """The error_log table of the SQL store at ``engine``."""

    def __init__(
        self,
        engine: sa.Engine,
        redact: Callable[[str], str] | None = None,
        message_chars: int = 2000,
    ) -> None:
        self.engine = engine
        self._redact = redact
        self.message_chars = message_chars

    def _clean(self, text: str) -> str:
        redact = self._redact or Redactor.from_environ()  # the environment as it is now
        return truncate(redact(text), self.message_chars)

    def record(self, entries: Sequence[ErrorLogEntry]) -> list[ErrorLogEntry]:
        """Insert ``entries`` in one transaction; returns them with id, redacted message and
        created_at. AlreadyRecorded when one of them was recorded before (none is then)."""
        now = datetime.now(UTC)
        cleaned = [replace(e, message=self._clean(e.message), created_at=now) for e in entries]
        rows = [
            {
                **{name: getattr(e, name) for name in _FIELDS if name != "id"},
                "action": e.action.value,
                "dedupe_key": e.dedupe_key(),
            }
            for e in cleaned
        ]
        try:
            with self.engine.begin() as connection:
                insert = error_log.insert().returning(error_log.c.id)
                ids = [connection.execute(insert.values(row)).scalar_one() for row in rows]
        except sa.exc.IntegrityError as error:
            existing = self._existing([row["dedupe_key"] for row in rows])
            if existing:
                raise AlreadyRecorded(
                    f"error_log already holds {existing}: this failure was handled"
                ) from error
            raise StoreError(f"cannot write to error_log: {error}") from error
        except sa.exc.SQLAlchemyError as error:
            raise StoreError(
                f"cannot write to error_log at {self.engine.url!r}: {error}. The failure "
                "handler's decision is not recorded; check the SQL store (sql.url)"
            ) from error
        return [replace(e, id=i) for e, i in zip(cleaned, ids, strict=True)]

    def _existing(self, keys: list[str]) -> list[str]:
        query = sa.select(error_log.c.dedupe_key).where(error_log.c.dedupe_key.in_(keys))
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def _select(self, *where: sa.ColumnElement[bool]) -> list[ErrorLogEntry]:
        query = sa.select(error_log).where(*where).order_by(error_log.c.id)
        with self.engine.connect() as connection:
            return [_entry(row) for row in connection.execute(query)]

    def for_run(self, run_id: str) -> list[ErrorLogEntry]:
        return self._select(error_log.c.run_id == run_id)

    def for_root(self, root_run_id: str) -> list[ErrorLogEntry]:
        return self._select(error_log.c.root_run_id == root_run_id)

    def decided(self, run_id: str) -> bool:
        """Whether the failure of ``run_id`` was handled already."""
        actions = [a.value for a in DECISIONS]
        return bool(self._select(error_log.c.run_id == run_id, error_log.c.action.in_(actions)))

    def retries_scheduled(self, root_run_id: str) -> int:
        """How many re-executions of ``root_run_id`` were scheduled so far."""
        query = sa.select(sa.func.count(sa.distinct(error_log.c.attempt))).where(
            error_log.c.root_run_id == root_run_id,
            error_log.c.action == Action.RETRY_SCHEDULED.value,
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def due_retries(self, now: datetime) -> list[ErrorLogEntry]:
        """One scheduled re-execution per (root run, attempt) whose backoff is over and that
        was neither requested nor abandoned yet, oldest first."""
        launched = error_log.alias("launched")
        not_launched = ~sa.exists().where(
            launched.c.root_run_id == error_log.c.root_run_id,
            launched.c.attempt == error_log.c.attempt,
            launched.c.action.in_([a.value for a in LAUNCHES]),
        )
        scheduled = self._select(error_log.c.action == Action.RETRY_SCHEDULED.value, not_launched)
        due: dict[tuple[str, int], ErrorLogEntry] = {}
        for entry in scheduled:
            if entry.due_at is not None and entry.due_at <= now:
                due.setdefault((entry.root_run_id, entry.attempt), entry)
        return list(due.values())
