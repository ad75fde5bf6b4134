"""Classification by type (live and as Dagster stores it), decisions, redaction."""

from __future__ import annotations

import errno
import io
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import httpx
import openai
import polars as pl
import pytest
import requests
import sqlalchemy as sa
import torch
import yaml
from dagster._utils.error import serializable_error_info_from_exc_info

from pulse_assets.config import ErrorHandlingSettings
from pulse_assets.errors import (
    ConfigError,
    FeatureError,
    QuarantineError,
    SchemaError,
    SourceError,
    StoreError,
    TrainingDivergedError,
)
from pulse_assets.ingest.http_source import _Retryable
from pulse_assets.reliability.failures import (
    REDACTED,
    WEBHOOK_ENV,
    Action,
    Classification,
    Classifier,
    ErrorLink,
    FailedStep,
    FailureClass,
    Redactor,
    RetryLineage,
    Strategy,
    backoff,
    decide,
    link_of_error_info,
    truncate,
)
from pulse_assets.training.dataset import TrainingDataError
from pulse_assets.training.rounds import RoundError
from pulse_assets.training.trainer import TrainingError

FC = FailureClass


def raised(make: Callable[[], object]) -> BaseException:
    """The exception ``make`` raises, with its real traceback and chain."""
    try:
        make()
    except BaseException as error:  # noqa: BLE001 (the point is to catch anything)
        return error
    raise AssertionError("the case did not raise")


def _closed_port() -> None:
    httpx.get("http://127.0.0.1:9/", timeout=2)  # port 9 (discard) has no listener here


def _source_down() -> None:
    try:
        try:
            _closed_port()
        except httpx.TransportError as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from error
    except _Retryable as error:
        raise SourceError("s", "http://127.0.0.1:9", "gave up", "retry") from error


def _source_timeout() -> None:
    try:
        try:
            raise httpx.ReadTimeout("timed out")
        except httpx.TimeoutException as error:
            raise _Retryable("ReadTimeout") from error
    except _Retryable as error:
        raise SourceError("s", "http://x", "gave up", "retry") from error


def _disk_full() -> None:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as error:
        raise StoreError("could not write partition 2020-01-01") from error


def _store_permission() -> None:
    try:
        raise PermissionError(errno.EACCES, "Permission denied", "/store/raw/x.parquet")
    except OSError as error:
        raise StoreError("could not write partition") from error


def _corrupt_partition() -> None:
    try:
        pl.read_parquet(io.BytesIO(b"not parquet at all"))
    except pl.exceptions.PolarsError as error:
        raise StoreError("partition file cannot be read") from error


def _schema_from_polars() -> None:
    try:
        pl.DataFrame({"a": [1]}).select("b")
    except pl.exceptions.ColumnNotFoundError as error:
        raise SchemaError("data lacks column b") from error


def _oom_in_training() -> None:
    try:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    except RuntimeError as error:
        raise TrainingError("training failed") from error


def _diverged_inside_round() -> None:
    try:
        raise TrainingDivergedError("loss became nan at epoch 3")
    except TrainingDivergedError:
        raise RoundError("round 2016-07-01 failed")  # noqa: B904 (implicit context on purpose)


def _sqlite_unreachable() -> None:
    sa.create_engine("sqlite:////nonexistent-folder/pulse.db").connect()


def _config_yaml() -> None:
    try:
        yaml.safe_load("a: [1, 2")
    except yaml.YAMLError as error:
        raise ConfigError("configs/pulse.yaml is not valid YAML") from error


def _words_only() -> None:
    raise ValueError("schema column timeout: CUDA out of memory, connection refused, no space")


def _suppressed_context() -> None:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise ValueError("bad value") from None


def _value_error_while_disk_full() -> None:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise KeyError("x")  # noqa: B904 (implicit context on purpose)


class SlowSource(TimeoutError):
    """A subclass only this test knows: found through its registered base."""


def _boto_endpoint() -> None:
    raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def _openai_timeout() -> None:
    raise openai.APITimeoutError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))


def raiser(error: BaseException) -> Callable[[], None]:
    def make() -> None:
        raise error

    return make


CASES: list[tuple[str, Callable[[], object], FailureClass]] = [
    ("schema error", raiser(SchemaError("no column")), FC.DATA_SCHEMA_MISMATCH),
    ("schema over polars", _schema_from_polars, FC.DATA_SCHEMA_MISMATCH),
    ("quarantine", raiser(QuarantineError("6%")), FC.DATA_INVALID_INPUT),
    ("feature", raiser(FeatureError("needs x")), FC.DATA_MISSING_FEATURES),
    ("training data", raiser(TrainingDataError("0 rows")), FC.DATA_MISSING_FEATURES),
    ("diverged in round", _diverged_inside_round, FC.MODEL_TRAINING_DIVERGED),
    ("gpu oom in training", _oom_in_training, FC.MODEL_GPU_OUT_OF_MEMORY),
    ("disk full under store", _disk_full, FC.SYSTEM_RESOURCE_EXHAUSTED),
    ("permission under store", _store_permission, FC.STORAGE_PERMISSION_DENIED),
    ("corrupt partition", _corrupt_partition, FC.STORAGE_CORRUPT),
    ("store alone", raiser(StoreError("no partitions")), FC.STORAGE_UNAVAILABLE),
    ("source down", _source_down, FC.NETWORK_UNAVAILABLE),
    ("source timeout", _source_timeout, FC.NETWORK_TIMEOUT),
    ("closed port", _closed_port, FC.NETWORK_UNAVAILABLE),
    ("requests connect timeout", raiser(requests.ConnectTimeout()), FC.NETWORK_TIMEOUT),
    ("openai timeout", _openai_timeout, FC.NETWORK_TIMEOUT),
    ("s3 endpoint down", _boto_endpoint, FC.NETWORK_UNAVAILABLE),
    (
        "boto no credentials",
        raiser(botocore.exceptions.NoCredentialsError()),
        FC.SYSTEM_MISCONFIGURED,
    ),
    ("sql store unreachable", _sqlite_unreachable, FC.STORAGE_UNAVAILABLE),
    ("file not found", lambda: open("/nonexistent-folder/x"), FC.STORAGE_NOT_FOUND),  # noqa: SIM115
    ("memory", raiser(MemoryError()), FC.SYSTEM_RESOURCE_EXHAUSTED),
    ("config", _config_yaml, FC.SYSTEM_MISCONFIGURED),
    ("test-only subclass", raiser(SlowSource("slow")), FC.NETWORK_TIMEOUT),
    ("words only", _words_only, FC.UNKNOWN),
    ("context suppressed", _suppressed_context, FC.UNKNOWN),
    ("implicit context", _value_error_while_disk_full, FC.SYSTEM_RESOURCE_EXHAUSTED),
]


def serialized(error: BaseException):
    """The error as Dagster stores it in a STEP_FAILURE event (no live exception left)."""
    return serializable_error_info_from_exc_info((type(error), error, error.__traceback__))


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_classification_by_type_live_and_serialized(name, make, expected) -> None:
    error = raised(make)
    classifier = Classifier()
    live = classifier.classify(error)
    stored = classifier.classify_error_info(serialized(error))
    assert live.failure_class == expected, (
        f"{name}: {live.describe()} classified {live.failure_class}, expected {expected}; "
        "check the rule of its types in pulse_assets/reliability/failures.py"
    )
    assert stored.failure_class == expected, (
        f"{name}: the serialized chain classified {stored.failure_class}, the live one "
        f"{live.failure_class}: the type names Dagster recorded did not resolve"
    )
    assert stored.exception_type == live.exception_type


def test_unknown_type_name_is_not_imported() -> None:
    info = serialized(raised(_words_only))
    forged = info._replace(message="evil_pkg_never_imported.Boom: x\n", cls_name="Boom")
    found = Classifier().classify_error_info(forged)
    assert found.failure_class == FC.UNKNOWN
    assert "evil_pkg_never_imported" not in sys.modules, "a type name from a log was imported"


def test_name_must_match_cls_name() -> None:
    """A first line that does not end with the recorded class name is not read as a type."""
    info = serialized(raised(_words_only))
    forged = info._replace(message="pulse_assets.errors.SchemaError: x\n", cls_name="ValueError")
    assert link_of_error_info(forged).type_name == "ValueError"
    assert Classifier().classify_error_info(forged).failure_class == FC.UNKNOWN


def test_errno_read_from_serialized_oserror() -> None:
    link = link_of_error_info(
        serialized(raised(raiser(OSError(errno.ENOSPC, "No space left on device"))))
    )
    assert link == ErrorLink("builtins.OSError", "[Errno 28] No space left on device", 28)


# ----------------------------------------------------------------------------------------------


def step(failure_class: FailureClass, source: str | None = None, key: str = "s") -> FailedStep:
    return FailedStep(key, Classification(failure_class, "x.Error", ()), source)


NOW = datetime(2024, 5, 1, tzinfo=UTC)


def settings(**changes) -> ErrorHandlingSettings:
    return ErrorHandlingSettings(**({"backoff_s": 60, "max_attempts": 2} | changes))


def test_retryable_class_schedules_with_backoff() -> None:
    lineage = RetryLineage("root", retries_scheduled=1, batch_size=64)
    decision = decide([step(FC.NETWORK_UNAVAILABLE)], lineage, settings(), NOW)
    assert decision.retry is not None
    assert decision.retry.attempt == 2
    assert decision.retry.due_at == NOW + timedelta(seconds=120)  # 60 * 2**(2-1)
    assert decision.steps[0].action is Action.RETRY_SCHEDULED
    assert not decision.notify(4)


def test_a_retrying_lineage_alerts_on_its_first_failure_and_when_it_gives_up() -> None:
    exhausted = FC.SYSTEM_RESOURCE_EXHAUSTED  # severity 4, re-executed
    notify = [
        decide([step(exhausted)], RetryLineage("r", n, 64), settings(), NOW).notify(4)
        for n in (0, 1, 2)
    ]
    assert notify == [True, False, True], "alerts: first failure, quiet retry, giving up"


def test_attempts_run_out_and_severity_rises() -> None:
    lineage = RetryLineage("root", retries_scheduled=2, batch_size=64)
    decision = decide([step(FC.NETWORK_UNAVAILABLE)], lineage, settings(), NOW)
    assert decision.retry is None
    assert decision.steps[0].action is Action.RETRIES_EXHAUSTED
    assert decision.steps[0].severity == 4
    assert decision.notify(4)


def test_per_class_attempts_override() -> None:
    config = settings(
        classes={"network.timeout": {"strategy": "reexecute", "severity": 2, "max_attempts": 0}}
    )
    decision = decide([step(FC.NETWORK_TIMEOUT)], RetryLineage("r", 0, 64), config, NOW)
    assert decision.steps[0].action is Action.RETRIES_EXHAUSTED
    assert config.policy(FC.DATA_SCHEMA_MISMATCH).strategy is Strategy.QUARANTINE_SOURCE


def test_a_step_that_must_not_retry_withholds_the_retry() -> None:
    steps = [step(FC.NETWORK_TIMEOUT, key="a"), step(FC.DATA_SCHEMA_MISMATCH, "polls", key="b")]
    decision = decide(steps, RetryLineage("r", 0, 64), settings(), NOW)
    assert decision.retry is None
    assert [d.action for d in decision.steps] == [
        Action.RETRY_WITHHELD,
        Action.SOURCE_QUARANTINED,
    ]


def test_gpu_oom_halves_the_batch_down_to_the_floor() -> None:
    first = decide([step(FC.MODEL_GPU_OUT_OF_MEMORY)], RetryLineage("r", 0, 64), settings(), NOW)
    assert first.retry is not None and first.retry.batch_size == 32
    floor = decide(
        [step(FC.MODEL_GPU_OUT_OF_MEMORY)],
        RetryLineage("r", 1, 8),
        settings(min_batch_size=8),
        NOW,
    )
    assert floor.retry is None and floor.steps[0].action is Action.BATCH_AT_FLOOR


def test_record_only_strategies() -> None:
    steps = [
        step(FC.MODEL_TRAINING_DIVERGED, key="a"),
        step(FC.DATA_INVALID_INPUT, None, key="b"),
        step(FC.UNKNOWN, key="c"),
    ]
    decision = decide(steps, RetryLineage("r", 0, 64), settings(), NOW)
    assert [d.action for d in decision.steps] == [
        Action.CHAMPION_KEPT,
        Action.RECORDED,  # invalid input outside a raw asset: no source to quarantine
        Action.RECORDED,
    ]
    assert decision.retry is None


def test_backoff_is_capped() -> None:
    config = settings(backoff_s=10, backoff_factor=3, max_backoff_s=50)
    assert [backoff(config, n).total_seconds() for n in (1, 2, 3)] == [10, 30, 50]


# ----------------------------------------------------------------------------------------------


def test_redactor_hides_secret_env_values_the_webhook_and_url_passwords() -> None:
    environ = {
        "OPENAI_API_KEY": "sk-planted-0123456789",
        "pulse_db_password": "hunter2hunter2",
        "S3_SECRET_ACCESS": "AKIAPLANTED99",
        "BEARER_TOKEN": "tok-abcdef",
        "HOME": "/home/someone",
        "SHORT_KEY": "ab1",
        WEBHOOK_ENV: "http://127.0.0.1:8080/hooks/T000/B000/planted-token",
    }
    text = (
        "key sk-planted-0123456789, pw hunter2hunter2, s3 AKIAPLANTED99, tok-abcdef, "
        "posted to http://127.0.0.1:8080/hooks/T000/B000/planted-token; path "
        "/hooks/T000/B000/planted-token; db postgresql://app:s3cr3t@db:5432/pulse; home "
        "/home/someone; ab1"
    )
    clean = Redactor.from_environ(environ)(text)
    for secret in ["sk-planted", "hunter2", "AKIAPLANTED", "tok-abcdef", "planted-token", "s3cr3t"]:
        assert secret not in clean, f"{secret!r} survived redaction: {clean}"
    assert "/home/someone" in clean and "ab1" in clean, "values of ordinary names were redacted"
    assert clean.count(REDACTED) >= 6


def test_truncate_after_redaction() -> None:
    assert truncate("a" * 50, 20) == "aaaa ... [truncated]"
    assert truncate("short", 20) == "short"
