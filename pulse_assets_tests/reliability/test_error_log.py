"""The error_log table on SQLite and PostgreSQL: rows, redaction, dedupe, due retries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pulse_assets.reliability.error_log import AlreadyRecorded, ErrorLog, ErrorLogEntry
from pulse_assets.reliability.failures import REDACTED, Action

SECRET = "sk-planted-error-log-5f3a9c"


def entry(action: Action = Action.RETRY_SCHEDULED, **changes) -> ErrorLogEntry:
    base = ErrorLogEntry(
        run_id="run-1",
        root_run_id="run-1",
        job_name="pulse_main",
        step_key="raw__market_prices",
        partition="2016-01-04",
        failure_class="network.unavailable",
        severity=3,
        strategy="reexecute",
        action=action,
        attempt=1,
        exception_type="httpx.ConnectError",
        message=f"source down, token {SECRET} refused",
        source="market_prices",
        due_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    return replace(base, **changes)


def test_rows_round_trip_redacted(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_TEST_API_KEY", SECRET)
    log = ErrorLog(engine)
    (stored,) = log.record([entry()])
    (read,) = log.for_run("run-1")
    assert read == stored
    assert read.id is not None and read.created_at is not None
    assert read.created_at.tzinfo is not None and read.due_at == entry().due_at
    assert SECRET not in read.message and REDACTED in read.message
    with engine.connect() as connection:
        raw = " ".join(
            str(v) for row in connection.execute(sa.text("SELECT * FROM error_log")) for v in row
        )
    assert SECRET not in raw, "the planted secret reached the error_log table"


def test_message_is_cut_after_redaction(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_TEST_TOKEN", SECRET)
    log = ErrorLog(engine, message_chars=200)
    long = "x" * 175 + SECRET + "y" * 500  # cut first, the first 9 characters would stay
    (stored,) = log.record([entry(message=long)])
    assert len(stored.message) == 200 and stored.message.endswith("[truncated]")
    assert SECRET[:6] not in stored.message, "a cut secret left its start in the message"


def test_a_decision_is_recorded_once(engine: sa.Engine) -> None:
    log = ErrorLog(engine)
    log.record([entry(), entry(Action.RECORDED, step_key="other")])
    with pytest.raises(AlreadyRecorded, match="decision:run-1:raw__market_prices"):
        log.record([entry(Action.RECORDED, step_key="third"), entry()])
    assert [e.step_key for e in log.for_run("run-1")] == ["raw__market_prices", "other"], (
        "a refused batch must leave none of its rows"
    )
    assert log.decided("run-1") and not log.decided("run-2")


def test_due_retries_and_attempt_count(engine: sa.Engine) -> None:
    log = ErrorLog(engine)
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    log.record([entry(due_at=now - timedelta(seconds=1))])
    log.record([entry(run_id="run-2", attempt=2, due_at=now + timedelta(minutes=5))])
    log.record([entry(run_id="run-3", root_run_id="other", due_at=now)])
    assert log.retries_scheduled("run-1") == 2 and log.retries_scheduled("other") == 1
    due = log.due_retries(now)
    assert [(e.root_run_id, e.attempt) for e in due] == [("run-1", 1), ("other", 1)]
    log.record([replace(due[0], action=Action.RETRY_REQUESTED, message="requested")])
    assert [(e.root_run_id, e.attempt) for e in log.due_retries(now)] == [("other", 1)]
    later = now + timedelta(minutes=10)
    assert [(e.root_run_id, e.attempt) for e in log.due_retries(later)] == [
        ("run-1", 2),
        ("other", 1),
    ]
    with pytest.raises(AlreadyRecorded):
        log.record([replace(due[0], action=Action.RETRY_ABANDONED, message="again")])
