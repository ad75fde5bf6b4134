"""The freshness sensor's domain logic without Dagster: when a raw day is due and overdue, the
attempts and backoff of an episode, giving up once, the cursor, and the failure handler
leaving the freshness sensor's runs to it. The error_log is a real SQL store (SQLite and
PostgreSQL, from conftest), the webhook a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from pulse_assets.config import ErrorHandlingSettings, LiveSettings
from pulse_assets.reliability.error_log import ErrorLog
from pulse_assets.reliability.failures import (
    WEBHOOK_ENV,
    Action,
    Classifier,
    FailedStep,
    FailureClass,
    RetryLineage,
    decide,
)
from pulse_assets.reliability.freshness import (
    LOST_REQUEST_AFTER,
    AttemptOutcome,
    CursorError,
    Episode,
    FailureSummary,
    FreshnessCursor,
    PartitionRef,
    TickPlan,
    Watched,
    backoff,
    day_end,
    is_overdue,
    plan_tick,
    record_give_up,
    scheduled_day,
    watched_days,
)
from pulse_assets_tests.http_server import Reply, Script, scripted_server

NY = ZoneInfo("America/New_York")
WINDOW = timedelta(hours=30)
LIVE = LiveSettings(max_attempts=3, backoff_s=60, backoff_factor=2, max_backoff_s=150)
ERRORS = ErrorHandlingSettings()
REF = PartitionRef("iris", "2024-05-02")
DUE = datetime(2024, 5, 3, tzinfo=UTC)
OVERDUE_AT = DUE + WINDOW
NETWORK = FailureSummary(FailureClass.NETWORK_UNAVAILABLE, "httpx.ConnectError", "refused")
SCHEMA = FailureSummary(FailureClass.DATA_SCHEMA_MISMATCH, "pulse_assets.errors.SchemaError", "x")


def tick(
    cursor: FreshnessCursor,
    now: datetime,
    *,
    materialized: bool = False,
    in_flight: bool = False,
    last: AttemptOutcome | None = None,
    live: LiveSettings = LIVE,
) -> TickPlan:
    watched = [Watched(REF, DUE, materialized, in_flight, last)]
    return plan_tick(cursor, watched, now, WINDOW, live, ERRORS)


def failed(attempt: int, ended_at: datetime, failure: FailureSummary | None = NETWORK):
    return AttemptOutcome(f"run-{attempt}", attempt, ended_at, failure)


# --- due and overdue -------------------------------------------------------------------------


def test_a_day_is_due_when_it_ends_in_the_partitions_time_zone():
    assert day_end(date(2024, 5, 2), "America/New_York") == datetime(2024, 5, 3, tzinfo=NY)
    # across the spring DST change New York's 2024-03-10 lasts 23 hours
    march_10 = day_end(date(2024, 3, 10), "America/New_York") - day_end(
        date(2024, 3, 9), "America/New_York"
    )
    assert march_10 == timedelta(hours=23)


@pytest.mark.parametrize(
    ("tick_at", "time_zone", "day"),
    [
        (datetime(2024, 5, 7, 0, 30, tzinfo=NY), "America/New_York", date(2024, 5, 6)),
        (datetime(2024, 5, 6, 23, 59, tzinfo=NY), "America/New_York", date(2024, 5, 5)),
        (datetime(2024, 5, 7, 0, 0, tzinfo=NY), "America/New_York", date(2024, 5, 6)),
        # 22:30 in New York is 02:30 the next day in UTC: UTC's previous day has ended
        (datetime(2024, 5, 6, 22, 30, tzinfo=NY), "UTC", date(2024, 5, 6)),
    ],
)
def test_a_tick_ingests_the_day_that_ended_last(tick_at, time_zone, day):
    assert scheduled_day(tick_at, time_zone) == day


def test_watched_days_are_those_due_within_the_lookback_inside_the_partitions():
    now = datetime(2024, 5, 3, 1, 0, tzinfo=NY)
    days = watched_days(date(2024, 1, 1), None, "America/New_York", timedelta(days=2), now)
    assert [d.partition for d in days] == ["2024-05-02", "2024-05-01"]
    assert days[0].due_at == datetime(2024, 5, 3, tzinfo=NY)
    # 2024-04-30 was due 49 h before now: outside a 48 h lookback (a backfill's job)
    assert [
        d.partition for d in watched_days(date(2024, 5, 2), None, "UTC", timedelta(3), now)
    ] == ["2024-05-02"]
    ended = watched_days(date(2024, 1, 1), date(2024, 5, 2), "America/New_York", timedelta(2), now)
    assert [d.partition for d in ended] == ["2024-05-01"], "a day at or after partitions.end"


def test_overdue_from_the_moment_the_window_has_passed():
    assert not is_overdue(DUE, OVERDUE_AT - timedelta(seconds=1), WINDOW)
    assert is_overdue(DUE, OVERDUE_AT, WINDOW)
    assert not tick(FreshnessCursor(), OVERDUE_AT - timedelta(seconds=1)).requests
    assert tick(FreshnessCursor(), OVERDUE_AT).cursor.episodes[REF.key()].attempts == 1


def test_backoff_is_exponential_and_capped():
    assert [backoff(LIVE, n).total_seconds() for n in (1, 2, 3, 4)] == [60, 120, 150, 150]


# --- an episode ------------------------------------------------------------------------------


def test_attempts_wait_for_the_run_then_the_backoff_and_stop_at_max_attempts():
    now = OVERDUE_AT
    plan = tick(FreshnessCursor(), now)
    (request,) = plan.requests
    assert (request.ref, request.attempt) == (REF, 1)
    episode = plan.cursor.episodes[REF.key()]
    assert request.episode == episode.label(REF) == f"iris:2024-05-02:{int(now.timestamp())}"

    running = tick(plan.cursor, now + timedelta(minutes=5), in_flight=True)
    assert not running.requests and "queued or running" in running.summary()

    cursor = plan.cursor
    ended = now + timedelta(minutes=10)
    for attempt, wait in ((1, 60), (2, 120)):
        early = tick(cursor, ended + timedelta(seconds=wait - 1), last=failed(attempt, ended))
        assert not early.requests, f"attempt {attempt + 1} requested before its backoff"
        assert not early.give_ups
        ready = tick(cursor, ended + timedelta(seconds=wait), last=failed(attempt, ended))
        assert [r.attempt for r in ready.requests] == [attempt + 1]
        cursor = ready.cursor
        ended += timedelta(minutes=10)

    final = tick(cursor, ended + timedelta(hours=1), last=failed(3, ended))
    assert not final.requests
    (give_up,) = final.give_ups
    assert give_up.attempts == 3 and give_up.last == failed(3, ended)
    assert "3 re-ingestion(s) did not materialize it" in give_up.reason
    assert "network.unavailable" in give_up.reason
    later = tick(final.cursor, ended + timedelta(days=1), last=failed(3, ended))
    assert (later.requests, later.give_ups) == ([], []), "acted again after giving up"


def test_a_failure_retrying_cannot_fix_gives_up_at_once():
    plan = tick(FreshnessCursor(), OVERDUE_AT)
    ended = OVERDUE_AT + timedelta(minutes=1)
    after = tick(plan.cursor, ended + timedelta(hours=1), last=failed(1, ended, SCHEMA))
    assert not after.requests
    (give_up,) = after.give_ups
    assert give_up.attempts == 1 and "data.schema_mismatch" in give_up.reason


def test_a_materialization_ends_the_episode_and_resets_the_attempts():
    plan = tick(FreshnessCursor(), OVERDUE_AT)
    ended = OVERDUE_AT + timedelta(minutes=1)
    second = tick(plan.cursor, ended + timedelta(minutes=2), last=failed(1, ended))
    assert second.cursor.episodes[REF.key()].attempts == 2
    done = tick(second.cursor, ended + timedelta(minutes=5), materialized=True)
    assert done.resolved == [REF] and done.cursor.episodes == {}
    assert "its attempts are reset" in done.summary()
    # gone again (the partition wiped): a new episode, counting from 1
    again = tick(done.cursor, ended + timedelta(hours=2))
    assert [r.attempt for r in again.requests] == [1]
    assert again.requests[0].episode != plan.requests[0].episode


def test_a_requested_run_that_has_not_ended_is_waited_for_until_it_is_taken_as_lost():
    plan = tick(FreshnessCursor(), OVERDUE_AT)
    cursor = plan.cursor
    pending = tick(cursor, OVERDUE_AT + LOST_REQUEST_AFTER - timedelta(seconds=1))
    assert not pending.requests and "has not ended" in pending.summary()
    lost = tick(cursor, OVERDUE_AT + LOST_REQUEST_AFTER)
    assert [r.attempt for r in lost.requests] == [2]
    # an older attempt's run is not this attempt's outcome
    stale = tick(lost.cursor, OVERDUE_AT + LOST_REQUEST_AFTER * 1.5, last=failed(1, OVERDUE_AT))
    assert not stale.requests and not stale.give_ups


def test_episodes_leaving_the_lookback_are_dropped():
    plan = tick(FreshnessCursor(), OVERDUE_AT)
    later = plan_tick(plan.cursor, [], OVERDUE_AT + timedelta(days=5), WINDOW, LIVE, ERRORS)
    assert later.cursor.episodes == {}


# --- the cursor ------------------------------------------------------------------------------


def test_the_cursor_round_trips():
    cursor = FreshnessCursor(
        {
            REF.key(): Episode(since=1714700000.5, attempts=2, requested_at=1714700100.0),
            "polls/2024-05-01": Episode(since=1714600000.0, attempts=3, gave_up=True),
        }
    )
    text = cursor.serialize()
    assert FreshnessCursor.parse(text) == cursor
    assert FreshnessCursor.parse(None) == FreshnessCursor.parse("") == FreshnessCursor()
    assert json.loads(text)["version"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ('{"version": 7, "episodes": {}}', "not a version 1 freshness cursor"),
        ('["a"]', "not a version 1 freshness cursor"),
        ('{"version": 1, "episodes": []}', "'episodes' is not a mapping"),
        ('{"version": 1, "episodes": {"no-slash": {"since": 1}}}', "is not <source>/<YYYY-MM-DD>"),
        ('{"version": 1, "episodes": {"a/2024-01-01": {"since": 1, "x": 2}}}', "unexpected fields"),
        ('{"version": 1, "episodes": {"a/2024-01-01": {"since": "1"}}}', "wrong type"),
        (
            '{"version": 1, "episodes": {"a/2024-01-01": {"since": 1, "attempts": -1}}}',
            "wrong type",
        ),
        ('{"version": 1, "episodes": {"a/2024-01-01": 3}}', "is not a mapping"),
    ],
)
def test_a_bad_cursor_is_a_clear_error(text, message):
    with pytest.raises(CursorError, match=message):
        FreshnessCursor.parse(text)


# --- giving up: error_log and alert ----------------------------------------------------------


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    with scripted_server([Reply(200, {"ok": True})]) as (base, script):
        monkeypatch.setenv(WEBHOOK_ENV, base + "/hooks/planted-freshness-token")
        yield script


def give_up_after_three():
    """The give-up of an episode whose third attempt failed on the network."""
    ended = OVERDUE_AT + timedelta(hours=1)
    cursor = FreshnessCursor({REF.key(): Episode(OVERDUE_AT.timestamp(), 3, ended.timestamp())})
    (give_up,) = tick(cursor, ended + timedelta(hours=2), last=failed(3, ended)).give_ups
    return give_up


def test_giving_up_records_one_row_and_sends_one_alert(engine: sa.Engine, webhook: Script):
    log = ErrorLog(engine)
    give_up = give_up_after_three()
    recorded = record_give_up(give_up, "run-1", "ingest_iris", log, ERRORS)
    assert recorded is not None and recorded.alert is not None
    entry = recorded.entry
    assert (entry.action, entry.failure_class, entry.severity) == (
        Action.RETRY_ABANDONED,
        "network.unavailable",
        4,  # network.unavailable is 3, raised to errors.exhausted_severity
    )
    assert (entry.run_id, entry.root_run_id, entry.attempt) == ("run-3", "run-1", 4)
    assert (entry.source, entry.partition, entry.job_name) == ("iris", "2024-05-02", "ingest_iris")
    assert "freshness_sensor gave up on raw/iris 2024-05-02" in entry.message
    assert recorded.alert.action is Action.NOTIFIED
    (post,) = webhook.requests
    body = post["body"]
    assert body["source"] == "iris" and body["partition"] == "2024-05-02"
    assert body["failure_class"] == "network.unavailable" and body["severity"] == 4
    assert "planted-freshness-token" not in json.dumps(body)

    assert record_give_up(give_up, "run-1", "ingest_iris", log, ERRORS) is None
    assert len(webhook.requests) == 1, "a second evaluation of the same give-up alerted again"
    rows = [(r.action, r.run_id) for r in log.for_root("run-1")]
    assert rows == [(Action.RETRY_ABANDONED, "run-3"), (Action.NOTIFIED, "run-3")]


def test_below_the_threshold_no_alert_and_without_a_url_it_is_recorded_as_skipped(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    give_up = give_up_after_three()
    quiet = ErrorHandlingSettings(notify_min_severity=6)
    recorded = record_give_up(give_up, "run-1", "ingest_iris", ErrorLog(engine), quiet)
    assert recorded is not None and recorded.alert is None
    other = ErrorHandlingSettings()
    no_url = record_give_up(give_up_after_three(), "run-9", "ingest_iris", ErrorLog(engine), other)
    assert no_url is not None and no_url.alert is not None
    assert no_url.alert.action is Action.NOTIFY_SKIPPED


# --- the failure handler leaves the freshness sensor's runs to it ----------------------------


def test_the_failure_handler_records_but_does_not_retry_or_alert_a_freshness_run():
    found = Classifier().classify(ConnectionRefusedError(111, "refused"))
    step = FailedStep("raw__iris", found, "iris")
    now = datetime(2024, 5, 3, tzinfo=UTC)
    own = decide([step], RetryLineage("r1", 0, 64), ERRORS, now)
    assert own.retry is not None and own.steps[0].action is Action.RETRY_SCHEDULED
    left = decide([step], RetryLineage("r1", 0, 64, "freshness_sensor"), ERRORS, now)
    assert left.retry is None
    assert left.steps[0].action is Action.RETRY_WITHHELD
    assert "left to the freshness_sensor" in left.steps[0].note
    assert not left.notify(1), "the failure handler alerted on a run the freshness sensor owns"
