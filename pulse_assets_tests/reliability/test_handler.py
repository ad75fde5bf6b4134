"""The handler end to end without Dagster: decisions in the error_log (SQLite, PostgreSQL)
and alerts to a real webhook server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from pulse_assets.config import ErrorHandlingSettings
from pulse_assets.errors import SchemaError, SourceError
from pulse_assets.reliability.error_log import ErrorLog
from pulse_assets.reliability.failures import WEBHOOK_ENV, Action, Classifier, FailedStep
from pulse_assets.reliability.handler import RunFailure, handle_run_failure
from pulse_assets_tests.http_server import Reply, scripted_server

SECRET = "sk-planted-handler-77aa01"
HOOK_PATH = "/hooks/T0001/planted-webhook-token"
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def failure(error: BaseException, run_id: str = "run-1") -> RunFailure:
    try:
        raise error
    except BaseException as raised:  # noqa: BLE001
        found = Classifier().classify(raised)
    return RunFailure(
        run_id=run_id,
        root_run_id=run_id,
        job_name="pulse_main",
        partition="2016-01-04",
        batch_size=64,
        steps=(FailedStep("raw__polls", found, "polls"),),
    )


def schema_failure(run_id: str = "run-1") -> RunFailure:
    return failure(SchemaError(f"column margin missing; sent token {SECRET}"), run_id)


@pytest.fixture(autouse=True)
def planted_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_TEST_API_KEY", SECRET)


def test_alert_above_threshold_once(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ErrorLog(engine)
    with scripted_server([Reply(200, {"ok": True})]) as (base, script):
        monkeypatch.setenv(WEBHOOK_ENV, base + HOOK_PATH)
        handled = handle_run_failure(schema_failure(), log, ErrorHandlingSettings(), NOW)
        again = handle_run_failure(schema_failure(), log, ErrorHandlingSettings(), NOW)
    assert handled is not None and again is None, "the second evaluation must do nothing"
    assert len(script.requests) == 1, f"expected one alert, the webhook got {script.requests}"
    body = script.requests[0]["body"]
    assert script.requests[0]["path"] == HOOK_PATH
    assert (body["failure_class"], body["severity"], body["action"]) == (
        "data.schema_mismatch",
        4,
        "source_quarantined",
    )
    assert body["error_log_ids"] == [handled.entries[0].id]
    assert SECRET not in json.dumps(body), "the planted secret reached the webhook body"
    rows = log.for_run("run-1")
    assert [r.action for r in rows] == [Action.SOURCE_QUARANTINED, Action.NOTIFIED]
    assert all(SECRET not in r.message and "planted-webhook-token" not in r.message for r in rows)


def test_below_threshold_no_alert(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ErrorLog(engine)
    down = failure(SourceError("polls", "http://x", "HTTP 503", "retry"))
    with scripted_server([Reply(200, {})]) as (base, script):
        monkeypatch.setenv(WEBHOOK_ENV, base + HOOK_PATH)
        handled = handle_run_failure(down, log, ErrorHandlingSettings(), NOW)
    assert handled is not None and handled.alert is None
    assert script.requests == []
    assert [r.action for r in log.for_run("run-1")] == [Action.RETRY_SCHEDULED]


@pytest.mark.parametrize("reply", [Reply(500, {"error": "boom"}), Reply(200, {}, delay_s=2.0)])
def test_webhook_failure_is_recorded(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, reply: Reply
) -> None:
    log = ErrorLog(engine)
    settings = ErrorHandlingSettings(webhook_timeout_s=0.5)
    with scripted_server([reply]) as (base, _):
        monkeypatch.setenv(WEBHOOK_ENV, base + HOOK_PATH)
        handled = handle_run_failure(schema_failure(), log, settings, NOW)
    assert handled is not None and handled.alert is not None
    assert handled.alert.action is Action.NOTIFY_FAILED
    expected = "HTTP 500" if reply.status == 500 else "ReadTimeout"
    assert expected in handled.alert.message
    assert log.for_run("run-1")[-1] == handled.alert


def test_unreachable_webhook_is_recorded_without_its_url(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{port}{HOOK_PATH}")
    handled = handle_run_failure(schema_failure(), ErrorLog(engine), ErrorHandlingSettings(), NOW)
    assert handled is not None and handled.alert is not None
    assert handled.alert.action is Action.NOTIFY_FAILED
    assert "httpx.ConnectError" in handled.alert.message
    assert "planted-webhook-token" not in handled.alert.message


def test_no_webhook_configured(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    handled = handle_run_failure(schema_failure(), ErrorLog(engine), ErrorHandlingSettings(), NOW)
    assert handled is not None and handled.alert is not None
    assert handled.alert.action is Action.NOTIFY_SKIPPED
    assert WEBHOOK_ENV in handled.alert.message
