"""Live ingestion without Dagster: which raw partitions are due and overdue, and the freshness
sensor's attempts, backoff and give-up for each (the wiring is ``defs/freshness.py``).

A raw partition is one day. It is *due* when its day has ended in the partitions' time zone
(Dagster's daily partition exists from then on; an ingestion schedule's tick ingests the day
that ended last). It is *overdue* when the raw assets' warn window (``freshness.raw_warn_hours``,
the freshness policy's WARN) has passed since it was due and it has no materialization. The
sensor watches the days due within the last ``live.lookback_days``: an older gap is a backfill's.

For each overdue partition the sensor opens an *episode*: re-ingestion runs, one at a time,
attempt n+1 no sooner than ``backoff(n)`` after attempt n ended, at most ``live.max_attempts``.
A materialization ends the episode (its attempts are forgotten). When the attempts run out, or
one failed for a class whose strategy does not re-execute (``data.*``: re-ingesting the same
rows fails the same way), the sensor gives up once: one ``error_log`` row and one alert. The
episodes live in the sensor's cursor, a versioned JSON document.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pulse_assets.errors import PulseError
from pulse_assets.reliability.error_log import AlreadyRecorded, ErrorLog, ErrorLogEntry
from pulse_assets.reliability.failures import (
    WEBHOOK_ENV,
    Action,
    FailureClass,
    Redactor,
)
from pulse_assets.reliability.webhook import post_json

if TYPE_CHECKING:
    from pulse_assets.config import ErrorHandlingSettings, LiveSettings

SENSOR_NAME = "freshness_sensor"
CURSOR_VERSION = 1
# A requested attempt whose run has not shown up after this long is taken as lost (Dagster
# creates the run when the tick's requests are submitted, so this never waits in practice).
LOST_REQUEST_AFTER = timedelta(minutes=10)


class CursorError(PulseError):
    """The freshness sensor's cursor cannot be read back."""


# ---------------------------------------------------------------------------------------------
# When a partition is due and overdue
# ---------------------------------------------------------------------------------------------


def day_end(day: date, time_zone: str) -> datetime:
    """The moment ``day`` ends in ``time_zone`` (midnight starting the next day), in UTC:
    arithmetic on datetimes of one zone is wall-clock arithmetic, wrong across DST."""
    local = datetime.combine(day + timedelta(days=1), time(), tzinfo=ZoneInfo(time_zone))
    return local.astimezone(UTC)


def scheduled_day(tick: datetime, time_zone: str) -> date:
    """The partition a schedule tick ingests: the day that ended last at ``tick`` in the
    partitions' ``time_zone`` (the tick's own day has not ended, so it is no partition yet)."""
    return tick.astimezone(ZoneInfo(time_zone)).date() - timedelta(days=1)


@dataclass(frozen=True)
class DueDay:
    partition: str  # YYYY-MM-DD, the daily partition key
    due_at: datetime


def watched_days(
    start: date, end: date | None, time_zone: str, lookback: timedelta, now: datetime
) -> list[DueDay]:
    """The days of ``[start, end)`` due in ``(now - lookback, now]``, latest first."""
    now = now.astimezone(UTC)
    days = []
    day = scheduled_day(now, time_zone)
    while day >= start and (due := day_end(day, time_zone)) > now - lookback:
        if end is None or day < end:
            days.append(DueDay(day.isoformat(), due))
        day -= timedelta(days=1)
    return days


def is_overdue(due_at: datetime, now: datetime, window: timedelta) -> bool:
    """Overdue from the moment ``window`` has passed since it was due (the policy's WARN)."""
    return now.astimezone(UTC) - due_at.astimezone(UTC) >= window


def backoff(live: LiveSettings, attempt: int) -> timedelta:
    """The wait after attempt ``attempt`` ended: ``backoff_s * backoff_factor**(attempt-1)``,
    at most ``max_backoff_s``."""
    seconds = live.backoff_s * live.backoff_factor ** max(attempt - 1, 0)
    return timedelta(seconds=min(seconds, live.max_backoff_s))


# ---------------------------------------------------------------------------------------------
# The cursor
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One overdue partition's re-ingestion, from when it was first found overdue."""

    since: float  # epoch seconds: names the episode in run tags and run keys
    attempts: int = 0  # re-ingestion runs requested
    requested_at: float | None = None  # when the latest one was requested
    gave_up: bool = False

    def label(self, ref: PartitionRef) -> str:
        """The episode's name in run tags: ``<source>:<day>:<since>``."""
        return f"{ref.source}:{ref.partition}:{int(self.since)}"


@dataclass(frozen=True)
class PartitionRef:
    source: str
    partition: str

    def key(self) -> str:
        return f"{self.source}/{self.partition}"

    @classmethod
    def from_key(cls, key: str) -> PartitionRef:
        source, sep, partition = key.partition("/")
        if not (sep and source and partition):
            raise CursorError(f"episode key {key!r} is not <source>/<YYYY-MM-DD>")
        return cls(source, partition)


@dataclass(frozen=True)
class FreshnessCursor:
    episodes: Mapping[str, Episode] = field(default_factory=dict)

    def serialize(self) -> str:
        episodes = {key: asdict(episode) for key, episode in sorted(self.episodes.items())}
        return json.dumps({"version": CURSOR_VERSION, "episodes": episodes}, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> FreshnessCursor:
        """The cursor ``serialize`` wrote (None or empty: a fresh one); anything else is a
        CursorError saying what is wrong with it."""
        if not text:
            return cls()
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise CursorError(f"the cursor is not JSON ({error})") from error
        if not isinstance(document, dict) or document.get("version") != CURSOR_VERSION:
            raise CursorError(
                f"the cursor is not a version {CURSOR_VERSION} freshness cursor: {text[:120]!r}"
            )
        return cls({key: _episode(key, value) for key, value in _mapping(document).items()})


def _mapping(document: dict[str, Any]) -> dict[str, Any]:
    episodes = document.get("episodes")
    if not isinstance(episodes, dict):
        raise CursorError("the cursor's 'episodes' is not a mapping")
    return episodes


def _episode(key: str, value: Any) -> Episode:
    PartitionRef.from_key(key)
    if not isinstance(value, dict):
        raise CursorError(f"episode {key!r} is not a mapping: {value!r}")
    try:
        episode = Episode(**value)
    except TypeError as error:
        raise CursorError(f"episode {key!r} has unexpected fields: {error}") from error
    numbers_ok = (
        isinstance(episode.since, int | float)
        and isinstance(episode.attempts, int)
        and episode.attempts >= 0
        and (episode.requested_at is None or isinstance(episode.requested_at, int | float))
        and isinstance(episode.gave_up, bool)
    )
    if not numbers_ok:
        raise CursorError(f"episode {key!r} has a value of the wrong type: {value!r}")
    return episode


# ---------------------------------------------------------------------------------------------
# One tick
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureSummary:
    failure_class: FailureClass
    exception_type: str
    message: str


@dataclass(frozen=True)
class AttemptOutcome:
    """The sensor's latest run of an episode, once it has ended without materializing."""

    run_id: str
    attempt: int
    ended_at: datetime | None
    failure: FailureSummary | None  # None: it ended without a classified failure (canceled)


@dataclass(frozen=True)
class Watched:
    """One watched partition as the wiring read it from Dagster."""

    ref: PartitionRef
    due_at: datetime
    materialized: bool
    in_flight: bool = False  # a run that ingests it is queued or running
    last: AttemptOutcome | None = None  # the episode's latest ended run


@dataclass(frozen=True)
class Request:
    ref: PartitionRef
    episode: str  # Episode.label
    attempt: int


@dataclass(frozen=True)
class GiveUp:
    ref: PartitionRef
    episode: str
    attempts: int
    reason: str
    last: AttemptOutcome | None


@dataclass(frozen=True)
class TickPlan:
    requests: list[Request]
    give_ups: list[GiveUp]
    resolved: list[PartitionRef]  # episodes a materialization ended
    waiting: list[str]  # why an overdue partition gets nothing this tick
    cursor: FreshnessCursor

    def summary(self) -> str:
        parts = [f"re-ingest {r.ref.key()} (attempt {r.attempt})" for r in self.requests]
        parts += [f"gave up on {g.ref.key()}: {g.reason}" for g in self.give_ups]
        parts += [f"{ref.key()} materialized: its attempts are reset" for ref in self.resolved]
        return "; ".join(parts + self.waiting)


def plan_tick(
    cursor: FreshnessCursor,
    watched: Sequence[Watched],
    now: datetime,
    window: timedelta,
    live: LiveSettings,
    errors: ErrorHandlingSettings,
) -> TickPlan:
    """What the sensor does this tick for each watched partition, and its next cursor.
    Episodes of partitions no longer watched (out of the lookback) are dropped."""
    now = now.astimezone(UTC)
    plan = TickPlan([], [], [], [], FreshnessCursor())
    episodes: dict[str, Episode] = {}
    for item in watched:
        current = cursor.episodes.get(item.ref.key())
        if item.materialized:
            if current is not None:
                plan.resolved.append(item.ref)
            continue
        if current is None and not is_overdue(item.due_at, now, window):
            continue
        step = _step(current or Episode(since=now.timestamp()), item, now, live, errors)
        episodes[item.ref.key()] = step.episode
        plan.requests.extend([step.request] if step.request else [])
        plan.give_ups.extend([step.give_up] if step.give_up else [])
        plan.waiting.extend([step.waiting] if step.waiting else [])
    return replace(plan, cursor=FreshnessCursor(episodes))


@dataclass(frozen=True)
class _Step:
    """What one overdue partition gets this tick: at most one of a request, a give-up or a
    reason to wait, and its episode afterwards."""

    episode: Episode
    request: Request | None = None
    give_up: GiveUp | None = None
    waiting: str | None = None


def _step(
    episode: Episode,
    item: Watched,
    now: datetime,
    live: LiveSettings,
    errors: ErrorHandlingSettings,
) -> _Step:
    """One overdue partition: wait, request the next attempt, or give up."""
    key, label = item.ref.key(), episode.label(item.ref)
    if episode.gave_up:
        return _Step(episode)
    if item.in_flight:
        return _Step(episode, waiting=f"{key}: a run ingesting it is queued or running")
    last = item.last if item.last and item.last.attempt == episode.attempts else None
    if episode.attempts and last is None and not _lost(episode, now):
        waiting = f"{key}: attempt {episode.attempts} was requested; its run has not ended"
        return _Step(episode, waiting=waiting)
    if episode.attempts:
        reason = _give_up_reason(episode, last, live, errors)
        if reason is not None:
            give_up = GiveUp(item.ref, label, episode.attempts, reason, last)
            return _Step(replace(episode, gave_up=True), give_up=give_up)
        ended = last.ended_at if last and last.ended_at else None
        since = ended or datetime.fromtimestamp(episode.requested_at or episode.since, UTC)
        ready_at = since + backoff(live, episode.attempts)
        if now < ready_at:
            waiting = f"{key}: attempt {episode.attempts + 1} due at {ready_at.isoformat()}"
            return _Step(episode, waiting=waiting)
    attempt = episode.attempts + 1
    return _Step(
        replace(episode, attempts=attempt, requested_at=now.timestamp()),
        request=Request(item.ref, label, attempt),
    )


def _lost(episode: Episode, now: datetime) -> bool:
    requested = datetime.fromtimestamp(episode.requested_at or episode.since, UTC)
    return now - requested >= LOST_REQUEST_AFTER


def _give_up_reason(
    episode: Episode,
    last: AttemptOutcome | None,
    live: LiveSettings,
    errors: ErrorHandlingSettings,
) -> str | None:
    failure = last.failure if last else None
    if failure is not None and not errors.policy(failure.failure_class).strategy.retries:
        strategy = errors.policy(failure.failure_class).strategy
        return (
            f"attempt {episode.attempts} failed with {failure.failure_class} (strategy "
            f"{strategy}), which re-ingesting the same day does not fix"
        )
    if episode.attempts >= live.max_attempts:
        what = f"last: {failure.failure_class}" if failure else "the last ended without an error"
        return (
            f"{episode.attempts} re-ingestion(s) did not materialize it (live.max_attempts; {what})"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Giving up: the error_log row and the alert
# ---------------------------------------------------------------------------------------------


def episode_run_id(episode: str) -> str:
    """A stand-in run id for an episode none of whose runs can be found (deleted)."""
    return f"freshness-{hashlib.sha256(episode.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class GiveUpRecord:
    entry: ErrorLogEntry
    alert: ErrorLogEntry | None  # notified, notify_failed or notify_skipped; None: below threshold


def record_give_up(
    give_up: GiveUp,
    first_run_id: str | None,
    job_name: str | None,
    log: ErrorLog,
    errors: ErrorHandlingSettings,
) -> GiveUpRecord | None:
    """One ``retry_abandoned`` row for the episode (its root is the episode's first run, its
    attempt the one not requested) and, at ``errors.notify_min_severity`` and above, one
    alert; None when this give-up was recorded before (a tick evaluated twice)."""
    failure = give_up.last.failure if give_up.last else None
    failure_class = failure.failure_class if failure else FailureClass.UNKNOWN
    policy = errors.policy(failure_class)
    severity = max(policy.severity, errors.exhausted_severity)
    run_id = give_up.last.run_id if give_up.last else episode_run_id(give_up.episode)
    detail = f"\nlast failure: {failure.message}" if failure else ""
    entry = ErrorLogEntry(
        run_id=run_id,
        root_run_id=first_run_id or run_id,
        job_name=job_name,
        step_key=None,
        partition=give_up.ref.partition,
        failure_class=failure_class.value,
        severity=severity,
        strategy=policy.strategy.value,
        action=Action.RETRY_ABANDONED,
        attempt=give_up.attempts + 1,
        exception_type=failure.exception_type if failure else None,
        message=f"{SENSOR_NAME} gave up on raw/{give_up.ref.source} {give_up.ref.partition} "
        f"(episode {give_up.episode}): {give_up.reason}{detail}",
        source=give_up.ref.source,
    )
    try:
        (recorded,) = log.record([entry])
    except AlreadyRecorded:
        return None
    if severity < errors.notify_min_severity:
        return GiveUpRecord(recorded, None)
    return GiveUpRecord(recorded, _alert(recorded, log, errors))


def alert_payload(entry: ErrorLogEntry) -> dict[str, Any]:
    title = (
        f"Pulse: raw/{entry.source} {entry.partition} is still missing; {SENSOR_NAME} gave up "
        f"({entry.failure_class}, severity {entry.severity})"
    )
    return {
        "text": f"{title}\n{entry.message}",
        "title": title,
        "severity": entry.severity,
        "failure_class": entry.failure_class,
        "strategy": entry.strategy,
        "action": entry.action.value,
        "attempt": entry.attempt,
        "run_id": entry.run_id,
        "root_run_id": entry.root_run_id,
        "job_name": entry.job_name,
        "source": entry.source,
        "partition": entry.partition,
        "message": entry.message,
        "error_log_ids": [entry.id],
    }


def _alert(
    entry: ErrorLogEntry, log: ErrorLog, errors: ErrorHandlingSettings
) -> ErrorLogEntry | None:
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        action, detail = Action.NOTIFY_SKIPPED, f"{WEBHOOK_ENV} is not set: no alert was sent"
    else:
        redact = Redactor.from_environ()
        payload = {
            k: redact(v) if isinstance(v, str) else v for k, v in alert_payload(entry).items()
        }
        delivery = post_json(url, payload, errors.webhook_timeout_s)
        action = Action.NOTIFIED if delivery.ok else Action.NOTIFY_FAILED
        detail = f"alert {'sent' if delivery.ok else 'not delivered'}: {delivery.detail}"
    note = replace(
        entry,
        action=action,
        message=f"{detail} (severity {entry.severity} >= {errors.notify_min_severity})",
        id=None,
        created_at=None,
    )
    try:
        (recorded,) = log.record([note])
    except AlreadyRecorded:
        return None
    return recorded
