"""The plan's RecursiveTrainingErrorHandler, minus Dagster: taxonomy, classification by
exception type, severity, strategy, redaction.

A failure is classified by the *types* in its exception chain (``__cause__``, else
``__context__``), never by words in its message. Each class of the chain is looked up
through its MRO in :func:`default_rules`, which names real exception classes of Pulse
Assets and of the libraries it uses. A failure read back from Dagster's event log holds no
live exception, only each chain link's ``cls_name`` and the message line Python wrote for
it (``module.QualName: text``): those are matched against the fully qualified names of the
registered classes and every subclass of them known at lookup time, so the mapping is
still by type. A name that is not known stays unknown: nothing is ever imported by a name
read from an event log.

Which link decides: walking from the outermost exception inwards, the first registered
one decides, and an inner one replaces it only when the outer rule allows its family in
``refine`` (a wrapper such as :class:`~pulse_assets.errors.StoreError` lets an inner
``OSError`` say *why* the store failed; a deliberate :class:`~pulse_assets.errors.SchemaError`
is not overruled by the polars error it wraps). Unregistered links (Dagster's step wrapper,
``ValueError``) are transparent.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pulse_assets.config import ErrorHandlingSettings

WEBHOOK_ENV = "PULSE_ALERT_WEBHOOK_URL"
MAX_CHAIN = 20  # links of a cause chain read; a longer one is cut (and a cycle stops it)


class FailureClass(StrEnum):
    """The plan's taxonomy (``family.kind``)."""

    DATA_INVALID_INPUT = "data.invalid_input"
    DATA_SCHEMA_MISMATCH = "data.schema_mismatch"
    DATA_MISSING_FEATURES = "data.missing_features"
    MODEL_INITIALIZATION_FAILED = "model.initialization_failed"
    MODEL_TRAINING_DIVERGED = "model.training_diverged"
    MODEL_GPU_OUT_OF_MEMORY = "model.gpu_out_of_memory"
    STORAGE_UNAVAILABLE = "storage.unavailable"
    STORAGE_NOT_FOUND = "storage.not_found"
    STORAGE_PERMISSION_DENIED = "storage.permission_denied"
    STORAGE_CORRUPT = "storage.corrupt"
    NETWORK_TIMEOUT = "network.timeout"
    NETWORK_UNAVAILABLE = "network.unavailable"
    SYSTEM_RESOURCE_EXHAUSTED = "system.resource_exhausted"
    SYSTEM_MISCONFIGURED = "system.misconfigured"
    UNKNOWN = "unknown"

    @property
    def family(self) -> str:
        return self.value.split(".", 1)[0]


class Strategy(StrEnum):
    """What the handler does for a class: re-execute from failure (with backoff), the same
    with the training batch halved, keep the previous champion (record only), quarantine the
    source (record and tag the run), or record only."""

    REEXECUTE = "reexecute"
    SMALLER_BATCH = "smaller_batch"
    KEEP_CHAMPION = "keep_champion"
    QUARANTINE_SOURCE = "quarantine_source"
    RECORD = "record"

    @property
    def retries(self) -> bool:
        return self in (Strategy.REEXECUTE, Strategy.SMALLER_BATCH)


class Severity(IntEnum):
    """The plan's 1-5 scale."""

    INFO = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5


# ---------------------------------------------------------------------------------------------
# Rules: exception type -> class
# ---------------------------------------------------------------------------------------------

ALL_FAMILIES = ("data", "model", "storage", "network", "system")


@dataclass(frozen=True)
class Rule:
    """The class of one exception type. ``refine`` maps a family to what an inner exception
    of that family makes of this one: None adopts the inner class, a class replaces it (a
    data error read back from the store is a corrupt store). ``errno_classes`` refines a
    plain OSError by its errno (one Python did not already map to a subclass)."""

    failure_class: FailureClass
    refine: Mapping[str, FailureClass | None] = field(default_factory=dict)
    errno_classes: Mapping[int, FailureClass] = field(default_factory=dict)

    def resolve(self, link: ErrorLink) -> FailureClass:
        if link.errno is not None and link.errno in self.errno_classes:
            return self.errno_classes[link.errno]
        return self.failure_class


def _library(failure_class: FailureClass) -> Rule:
    """A library exception: an inner one of the same family is more precise."""
    return Rule(failure_class, refine={failure_class.family: None})


def _wrapper(failure_class: FailureClass, **families: FailureClass | None) -> Rule:
    """A Pulse error that says where something failed; its cause may say why."""
    return Rule(failure_class, refine=families)


_ERRNO_CLASSES: dict[int, FailureClass] = {
    code: failure_class
    for name, failure_class in [
        ("ENOSPC", FailureClass.SYSTEM_RESOURCE_EXHAUSTED),
        ("EDQUOT", FailureClass.SYSTEM_RESOURCE_EXHAUSTED),
        ("ENOMEM", FailureClass.SYSTEM_RESOURCE_EXHAUSTED),
        ("EMFILE", FailureClass.SYSTEM_RESOURCE_EXHAUSTED),
        ("ENFILE", FailureClass.SYSTEM_RESOURCE_EXHAUSTED),
        ("EROFS", FailureClass.STORAGE_PERMISSION_DENIED),
        ("EHOSTUNREACH", FailureClass.NETWORK_UNAVAILABLE),
        ("ENETUNREACH", FailureClass.NETWORK_UNAVAILABLE),
        ("ENETDOWN", FailureClass.NETWORK_UNAVAILABLE),
    ]
    if (code := getattr(errno, name, None)) is not None
}


def _builtin_rules() -> dict[type[BaseException], Rule]:
    import socket
    import ssl

    fc = FailureClass
    return {
        MemoryError: Rule(fc.SYSTEM_RESOURCE_EXHAUSTED),
        OSError: Rule(fc.STORAGE_UNAVAILABLE, errno_classes=_ERRNO_CLASSES),
        FileNotFoundError: _library(fc.STORAGE_NOT_FOUND),
        NotADirectoryError: _library(fc.STORAGE_NOT_FOUND),
        IsADirectoryError: _library(fc.STORAGE_NOT_FOUND),
        PermissionError: _library(fc.STORAGE_PERMISSION_DENIED),
        TimeoutError: _library(fc.NETWORK_TIMEOUT),
        ConnectionError: _library(fc.NETWORK_UNAVAILABLE),
        socket.gaierror: _library(fc.NETWORK_UNAVAILABLE),
        ssl.SSLError: _library(fc.NETWORK_UNAVAILABLE),
    }


def _pulse_rules() -> dict[type[BaseException], Rule]:
    from pulse_assets import errors
    from pulse_assets.evaluation.baselines import BaselineError
    from pulse_assets.ingest.http_source import _Retryable
    from pulse_assets.metrics.regression import MetricsError
    from pulse_assets.rules.language import InvalidNumberError, RuleSyntaxError, UnknownNameError
    from pulse_assets.rules.llm import LLMError
    from pulse_assets.rules.repository import (
        InvalidTransitionError,
        RuleNotFoundError,
        StoredRuleError,
    )
    from pulse_assets.training.checkpoints import CheckpointError
    from pulse_assets.training.dataset import TrainingDataError
    from pulse_assets.training.model_files import ModelFileError
    from pulse_assets.training.registry import TrackingError, VersionTagError
    from pulse_assets.training.rounds import RoundError
    from pulse_assets.training.trainer import TrainingError

    fc = FailureClass
    adopt_all: dict[str, FailureClass | None] = dict.fromkeys(ALL_FAMILIES)
    return {
        errors.ConfigError: Rule(fc.SYSTEM_MISCONFIGURED),
        # a source that could not be read: retryable unless its cause says otherwise
        errors.SourceError: Rule(fc.NETWORK_UNAVAILABLE, refine=adopt_all),
        _Retryable: _library(fc.NETWORK_UNAVAILABLE),
        errors.SchemaError: Rule(fc.DATA_SCHEMA_MISMATCH),
        errors.QuarantineError: Rule(fc.DATA_INVALID_INPUT),
        errors.StoreError: _wrapper(
            fc.STORAGE_UNAVAILABLE,
            storage=None,
            network=None,
            system=None,
            data=fc.STORAGE_CORRUPT,
        ),
        errors.FeatureError: Rule(fc.DATA_MISSING_FEATURES),
        errors.NoChampionError: Rule(fc.MODEL_INITIALIZATION_FAILED),
        errors.TrainingDivergedError: Rule(fc.MODEL_TRAINING_DIVERGED),
        TrainingDataError: Rule(fc.DATA_MISSING_FEATURES),
        RoundError: _wrapper(fc.DATA_MISSING_FEATURES, model=None, system=None),
        TrainingError: _wrapper(fc.MODEL_INITIALIZATION_FAILED, model=None, system=None),
        CheckpointError: _wrapper(fc.STORAGE_CORRUPT, storage=None, system=None),
        ModelFileError: _wrapper(fc.STORAGE_CORRUPT, storage=None, system=None),
        TrackingError: _wrapper(fc.NETWORK_UNAVAILABLE, network=None, storage=None, system=None),
        VersionTagError: Rule(fc.STORAGE_CORRUPT),
        LLMError: _wrapper(fc.NETWORK_UNAVAILABLE, network=None, system=None, data=None),
        StoredRuleError: Rule(fc.STORAGE_CORRUPT),
        RuleNotFoundError: Rule(fc.STORAGE_NOT_FOUND),
        InvalidTransitionError: Rule(fc.DATA_INVALID_INPUT),
        RuleSyntaxError: Rule(fc.DATA_INVALID_INPUT),
        UnknownNameError: Rule(fc.DATA_INVALID_INPUT),
        InvalidNumberError: Rule(fc.DATA_INVALID_INPUT),
        MetricsError: Rule(fc.DATA_INVALID_INPUT),
        BaselineError: Rule(fc.DATA_MISSING_FEATURES),
    }


def _http_rules() -> dict[type[BaseException], Rule]:
    import httpx
    import openai
    import requests
    import urllib3.exceptions as urllib3_errors

    fc = FailureClass
    return {
        httpx.TimeoutException: _library(fc.NETWORK_TIMEOUT),
        httpx.TransportError: _library(fc.NETWORK_UNAVAILABLE),
        httpx.UnsupportedProtocol: Rule(fc.SYSTEM_MISCONFIGURED),
        httpx.InvalidURL: Rule(fc.SYSTEM_MISCONFIGURED),
        httpx.HTTPStatusError: _library(fc.NETWORK_UNAVAILABLE),
        requests.Timeout: _library(fc.NETWORK_TIMEOUT),
        requests.ConnectTimeout: _library(fc.NETWORK_TIMEOUT),
        requests.ConnectionError: _library(fc.NETWORK_UNAVAILABLE),
        requests.HTTPError: _library(fc.NETWORK_UNAVAILABLE),
        urllib3_errors.TimeoutError: _library(fc.NETWORK_TIMEOUT),
        urllib3_errors.NewConnectionError: _library(fc.NETWORK_UNAVAILABLE),
        urllib3_errors.MaxRetryError: _library(fc.NETWORK_UNAVAILABLE),
        urllib3_errors.ProtocolError: _library(fc.NETWORK_UNAVAILABLE),
        openai.APITimeoutError: _library(fc.NETWORK_TIMEOUT),
        openai.APIConnectionError: _library(fc.NETWORK_UNAVAILABLE),
        openai.APIStatusError: _library(fc.NETWORK_UNAVAILABLE),
        openai.AuthenticationError: Rule(fc.SYSTEM_MISCONFIGURED),
        openai.PermissionDeniedError: Rule(fc.SYSTEM_MISCONFIGURED),
        openai.BadRequestError: Rule(fc.DATA_INVALID_INPUT),
    }


def _storage_rules() -> dict[type[BaseException], Rule]:
    import botocore.exceptions as boto  # type: ignore[import-untyped]
    import polars as pl
    import safetensors
    import sqlalchemy as sa

    fc = FailureClass
    return {
        boto.BotoCoreError: _library(fc.STORAGE_UNAVAILABLE),
        boto.ClientError: _library(fc.STORAGE_UNAVAILABLE),
        boto.EndpointConnectionError: _library(fc.NETWORK_UNAVAILABLE),
        boto.ConnectionClosedError: _library(fc.NETWORK_UNAVAILABLE),
        boto.ConnectTimeoutError: _library(fc.NETWORK_TIMEOUT),
        boto.ReadTimeoutError: _library(fc.NETWORK_TIMEOUT),
        boto.NoCredentialsError: Rule(fc.SYSTEM_MISCONFIGURED),
        boto.PartialCredentialsError: Rule(fc.SYSTEM_MISCONFIGURED),
        sa.exc.SQLAlchemyError: _library(fc.STORAGE_UNAVAILABLE),
        sa.exc.ArgumentError: Rule(fc.SYSTEM_MISCONFIGURED),
        sa.exc.TimeoutError: Rule(fc.SYSTEM_RESOURCE_EXHAUSTED),  # the connection pool is used up
        sa.exc.NoSuchTableError: _library(fc.STORAGE_CORRUPT),
        sa.exc.ProgrammingError: _library(fc.STORAGE_CORRUPT),
        sa.exc.IntegrityError: _library(fc.DATA_INVALID_INPUT),
        sa.exc.DataError: _library(fc.DATA_INVALID_INPUT),
        pl.exceptions.PolarsError: _library(fc.DATA_INVALID_INPUT),
        pl.exceptions.SchemaError: _library(fc.DATA_SCHEMA_MISMATCH),
        pl.exceptions.SchemaFieldNotFoundError: _library(fc.DATA_SCHEMA_MISMATCH),
        pl.exceptions.ColumnNotFoundError: _library(fc.DATA_SCHEMA_MISMATCH),
        pl.exceptions.NoDataError: _library(fc.DATA_MISSING_FEATURES),
        safetensors.SafetensorError: _library(fc.STORAGE_CORRUPT),
    }


def _torch_rules() -> dict[type[BaseException], Rule]:
    import torch

    return {torch.cuda.OutOfMemoryError: Rule(FailureClass.MODEL_GPU_OUT_OF_MEMORY)}


@functools.cache
def default_rules() -> Mapping[type[BaseException], Rule]:
    """Every registered exception type and its rule (imports the libraries on first call)."""
    return {
        **_builtin_rules(),
        **_storage_rules(),
        **_http_rules(),
        **_torch_rules(),
        **_pulse_rules(),
    }


# ---------------------------------------------------------------------------------------------
# Chains: live exceptions and Dagster's serialized error info
# ---------------------------------------------------------------------------------------------


class ErrorInfo(Protocol):
    """What Dagster's ``SerializableErrorInfo`` holds (read without importing Dagster)."""

    @property
    def message(self) -> str: ...
    @property
    def cls_name(self) -> str | None: ...
    @property
    def cause(self) -> ErrorInfo | None: ...
    @property
    def context(self) -> ErrorInfo | None: ...


@dataclass(frozen=True)
class ErrorLink:
    """One exception of a chain: its type's ``module.QualName`` (``builtins.X`` for a
    built-in; the bare class name where nothing more was recorded), text and errno."""

    type_name: str
    message: str
    errno: int | None = None

    def line(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it: ``__cause__``, else ``__context__`` unless suppressed
    (what Python's traceback prints), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < MAX_CHAIN and all(current is not c for c in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return chain


def link_of_exception(error: BaseException) -> ErrorLink:
    code = error.errno if isinstance(error, OSError) and isinstance(error.errno, int) else None
    return ErrorLink(qualified_name(type(error)), str(error), code)


def error_info_chain(info: ErrorInfo) -> list[ErrorInfo]:
    """Dagster's serialized chain, outermost first: ``cause``, else ``context``."""
    chain: list[ErrorInfo] = []
    current: ErrorInfo | None = info
    while current is not None and len(chain) < MAX_CHAIN:
        chain.append(current)
        current = current.cause if current.cause is not None else current.context
    return chain


_TYPE_NAME = re.compile(r"^[A-Za-z_][\w.<>]*$")
_ERRNO_PREFIX = re.compile(r"^\[Errno (\d+)\] ")


def link_of_error_info(info: ErrorInfo) -> ErrorLink:
    """The link Python's ``traceback.format_exception_only`` wrote: its first line is
    ``module.QualName: text`` (no module for built-ins), checked against ``cls_name``.
    An OSError's errno is read from the ``[Errno N]`` prefix its ``__str__`` writes."""
    message = info.message.rstrip("\n")
    cls_name = info.cls_name or ""
    head, _, text = message.partition(": ")
    if "\n" in head:  # no ": " on the first line: an exception without text
        head, text = message.split("\n", 1)[0], ""
    ends_with_class = head == cls_name or head.endswith(f".{cls_name}")
    if not (cls_name and _TYPE_NAME.match(head) and ends_with_class):
        return ErrorLink(cls_name or "unknown", message)
    type_name = head if "." in head else f"builtins.{head}"
    found = _ERRNO_PREFIX.match(text)
    return ErrorLink(type_name, text, int(found.group(1)) if found else None)


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    failure_class: FailureClass
    exception_type: str  # the link that decided (the innermost link when unknown)
    chain: tuple[ErrorLink, ...]

    def describe(self) -> str:
        """Every link, outermost first (not yet redacted)."""
        return "\n  caused by: ".join(link.line() for link in self.chain)


class Classifier:
    """Classifies live exceptions by their types and serialized ones by their types' names."""

    def __init__(self, rules: Mapping[type[BaseException], Rule] | None = None) -> None:
        self._rules = dict(default_rules() if rules is None else rules)
        self._by_name: dict[str, Rule | None] | None = None

    def rule_for_type(self, cls: type[BaseException]) -> Rule | None:
        """The rule of the most specific registered class in ``cls``'s MRO."""
        return next((self._rules[base] for base in cls.__mro__ if base in self._rules), None)

    def rule_for_name(self, type_name: str) -> Rule | None:
        """The rule of the class named ``module.QualName``: a registered class or a subclass of
        one. Subclasses defined since the last look-up are found by looking again once."""
        if self._by_name is None or type_name not in self._by_name:
            self._by_name = self._name_index()
            self._by_name.setdefault(type_name, None)  # look again only for another name
        return self._by_name[type_name]

    def _name_index(self) -> dict[str, Rule | None]:
        index: dict[str, Rule | None] = {}
        for cls in _with_subclasses(self._rules):
            name, rule = qualified_name(cls), self.rule_for_type(cls)
            # two classes of one name with different rules (classes made in a function): unknown
            index[name] = rule if index.get(name, rule) == rule else None
        return index

    def classify(self, error: BaseException) -> Classification:
        chain = exception_chain(error)
        links = [link_of_exception(e) for e in chain]
        return _decide(links, [self.rule_for_type(type(e)) for e in chain])

    def classify_error_info(self, info: ErrorInfo) -> Classification:
        links = [link_of_error_info(i) for i in error_info_chain(info)]
        return _decide(links, [self.rule_for_name(link.type_name) for link in links])


def _with_subclasses(roots: Iterable[type[BaseException]]) -> Iterator[type[BaseException]]:
    seen: set[type[BaseException]] = set()
    stack = list(roots)
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(cls.__subclasses__())


def _decide(links: Sequence[ErrorLink], rules: Sequence[Rule | None]) -> Classification:
    decided: tuple[Rule, FailureClass, ErrorLink] | None = None
    for link, rule in zip(links, rules, strict=True):
        if rule is None:
            continue
        found = rule.resolve(link)
        if decided is None:
            decided = (rule, found, link)
            continue
        outer = decided[0]
        if found.family not in outer.refine:
            continue
        replacement = outer.refine[found.family]
        decided = (rule, found, link) if replacement is None else (outer, replacement, link)
    if decided is None:
        innermost = links[-1].type_name if links else "unknown"
        return Classification(FailureClass.UNKNOWN, innermost, tuple(links))
    return Classification(decided[1], decided[2].type_name, tuple(links))


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


class Action(StrEnum):
    """What the handler did; the first seven are decisions on a failed step."""

    RETRY_SCHEDULED = "retry_scheduled"
    RETRY_WITHHELD = "retry_withheld"  # another failed step of the run must not be re-run
    RETRIES_EXHAUSTED = "retries_exhausted"
    BATCH_AT_FLOOR = "batch_at_floor"  # the batch cannot be halved below min_batch_size
    CHAMPION_KEPT = "champion_kept"
    SOURCE_QUARANTINED = "source_quarantined"
    RECORDED = "recorded"
    RETRY_REQUESTED = "retry_requested"
    RETRY_ABANDONED = "retry_abandoned"
    NOTIFIED = "notified"
    NOTIFY_FAILED = "notify_failed"
    NOTIFY_SKIPPED = "notify_skipped"


DECISIONS = frozenset(list(Action)[:7])
LAUNCHES = frozenset({Action.RETRY_REQUESTED, Action.RETRY_ABANDONED})
NOTIFICATIONS = frozenset({Action.NOTIFIED, Action.NOTIFY_FAILED, Action.NOTIFY_SKIPPED})


@dataclass(frozen=True)
class FailedStep:
    step_key: str | None  # None: the run failed outside any step
    classification: Classification
    source: str | None = None  # the raw source the step ingests, if it is a raw asset


@dataclass(frozen=True)
class RetryLineage:
    """Where the failed run stands among the re-executions of its root run."""

    root_run_id: str
    retries_scheduled: int  # read from the error_log
    batch_size: int  # the training batch size the failed run used
    # A sensor that re-requests the failed work itself (the freshness sensor, for its own
    # runs): the handler then records but neither re-executes nor alerts; that sensor alerts
    # once when it gives up, so one outage is one alert.
    retried_by: str | None = None


@dataclass(frozen=True)
class StepDecision:
    step: FailedStep
    severity: int
    strategy: Strategy
    action: Action
    attempt: int  # the retry this decision schedules, or the last one tried
    note: str


@dataclass(frozen=True)
class RetryPlan:
    attempt: int
    due_at: datetime
    batch_size: int | None  # set when the re-execution trains with a halved batch


@dataclass(frozen=True)
class RunDecision:
    steps: tuple[StepDecision, ...]
    retry: RetryPlan | None
    retried_by: str | None = None  # see RetryLineage.retried_by

    @property
    def worst(self) -> StepDecision:
        return max(self.steps, key=lambda d: d.severity)

    def notify(self, min_severity: int) -> bool:
        """At ``min_severity`` and above, except while re-executions are still under way: a
        lineage alerts on its first failure and when it gives up, not on every attempt. A run
        whose work another sensor re-requests is that sensor's to alert on."""
        retrying = self.retry is not None and self.retry.attempt > 1
        return self.worst.severity >= min_severity and not retrying and self.retried_by is None


def backoff(settings: ErrorHandlingSettings, attempt: int) -> timedelta:
    """Exponential: ``backoff_s * backoff_factor**(attempt-1)``, at most ``max_backoff_s``."""
    seconds = settings.backoff_s * settings.backoff_factor ** max(attempt - 1, 0)
    return timedelta(seconds=min(seconds, settings.max_backoff_s))


def _retry_blocker(
    policy_strategy: Strategy,
    max_attempts: int,
    attempt: int,
    batch_size: int,
    settings: ErrorHandlingSettings,
) -> tuple[Action, str] | None:
    if attempt > max_attempts:
        return Action.RETRIES_EXHAUSTED, f"{max_attempts} re-execution(s) already tried"
    if policy_strategy is Strategy.SMALLER_BATCH and batch_size // 2 < settings.min_batch_size:
        return Action.BATCH_AT_FLOOR, (
            f"batch size {batch_size} cannot be halved without going under "
            f"errors.min_batch_size={settings.min_batch_size}"
        )
    return None


def decide(
    steps: Sequence[FailedStep],
    lineage: RetryLineage,
    settings: ErrorHandlingSettings,
    now: datetime,
) -> RunDecision:
    """Each failed step's severity, strategy and action, and the run's re-execution if every
    failed step's class retries and none is out of attempts (re-running a step that failed
    for a reason retrying cannot fix would only fail again)."""
    attempt = lineage.retries_scheduled + 1
    policies = [settings.policy(step.classification.failure_class) for step in steps]
    blockers = [
        _retry_blocker(
            p.strategy,
            settings.attempts(s.classification.failure_class),
            attempt,
            lineage.batch_size,
            settings,
        )
        if p.strategy.retries
        else None
        for s, p in zip(steps, policies, strict=True)
    ]
    retry = (
        bool(steps)
        and all(p.strategy.retries for p in policies)
        and not any(blockers)
        and lineage.retried_by is None
    )
    decisions = []
    for step, policy, blocker in zip(steps, policies, blockers, strict=True):
        action, note = _step_action(step, policy.strategy, blocker, retry, lineage.retried_by)
        severity = policy.severity
        if action in (Action.RETRIES_EXHAUSTED, Action.BATCH_AT_FLOOR):
            severity = max(severity, settings.exhausted_severity)
        shown = attempt if action is Action.RETRY_SCHEDULED else attempt - 1
        decisions.append(StepDecision(step, severity, policy.strategy, action, shown, note))
    plan = None
    if retry:
        halve = any(p.strategy is Strategy.SMALLER_BATCH for p in policies)
        plan = RetryPlan(
            attempt, now + backoff(settings, attempt), lineage.batch_size // 2 if halve else None
        )
    return RunDecision(tuple(decisions), plan, lineage.retried_by)


def _step_action(
    step: FailedStep,
    strategy: Strategy,
    blocker: tuple[Action, str] | None,
    retry: bool,
    retried_by: str | None = None,
) -> tuple[Action, str]:
    if strategy.retries:
        if blocker is not None:
            return blocker
        if retry:
            return Action.RETRY_SCHEDULED, "re-executed from failure after the backoff"
        if retried_by is not None:
            return Action.RETRY_WITHHELD, (
                f"left to the {retried_by}, which re-requests this work with its own attempts "
                "and backoff and alerts when it gives up"
            )
        return Action.RETRY_WITHHELD, "another failed step of this run must not be re-executed"
    if strategy is Strategy.KEEP_CHAMPION:
        return Action.CHAMPION_KEPT, "the previous champion stays; no alias moved"
    if strategy is Strategy.QUARANTINE_SOURCE:
        if step.source is None:
            return Action.RECORDED, "no raw source to quarantine: the step is not a raw asset"
        return Action.SOURCE_QUARANTINED, f"source {step.source!r} quarantined (run tagged)"
    return Action.RECORDED, "recorded for a person to look at"


# ---------------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------------

SECRET_NAME_PARTS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
MIN_SECRET_CHARS = 6  # shorter values ("1", "true") would blank ordinary words
REDACTED = "[redacted]"
TRUNCATED = " ... [truncated]"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]+@")


class Redactor:
    """Replaces secret values in text: every environment variable whose name holds KEY,
    SECRET, TOKEN or PASSWORD, the webhook URL (and its path, where tokens usually sit), and
    the password of any ``scheme://user:password@`` URL."""

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        self._secrets = sorted(kept, key=len, reverse=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        env = os.environ if environ is None else environ
        secrets = [v for k, v in env.items() if any(p in k.upper() for p in SECRET_NAME_PARTS)]
        return cls([*secrets, *_url_parts(env.get(WEBHOOK_ENV, ""))])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)


def _url_parts(url: str) -> list[str]:
    if not url:
        return []
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return [url, url.rstrip("/"), path if len(path) >= 8 else ""]


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying so when cut. Redact first: a cut secret would
    no longer be found."""
    return text if len(text) <= limit else text[: max(limit - len(TRUNCATED), 0)] + TRUNCATED
