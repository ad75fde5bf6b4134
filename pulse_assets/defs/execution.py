"""The executor every job uses, from ``execution`` in the settings.

With ``celery``, steps go through dagster-celery to workers on a broker (RabbitMQ). The broker
URL may hold a password, so it never enters a setting, the run config or an event: when the
variable ``execution.celery.broker_env`` is set, the executor's config is ``{env: NAME}`` and
Dagster reads the URL when the run starts; the workers read the same variable
(``pulse_assets.defs.celery_worker``).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_celery import celery_executor

from pulse_assets.config import CeleryConfig, ExecutionConfig
from pulse_assets.errors import ConfigError


def broker_config(config: CeleryConfig) -> str | dict[str, str]:
    """What the executor's ``broker`` is set to: a reference to the environment variable when
    it is set or required (Dagster reads it when a run starts, so the URL stays out of its
    config, and a run without it fails naming the variable), else the password-free
    ``broker`` setting."""
    if os.environ.get(config.broker_env) or config.require_broker_env:
        return {"env": config.broker_env}
    return config.broker


def broker_url(config: CeleryConfig) -> str:
    """The broker URL itself, for a worker (never logged: Celery prints it masked)."""
    if url := os.environ.get(config.broker_env):
        return url
    if config.require_broker_env:
        raise ConfigError(
            f"execution.celery: the broker URL is read from ${config.broker_env}, which is not "
            "set; export it (amqp://user:password@host:5672/vhost) where the Celery workers "
            "and the Dagster runs start"
        )
    return config.broker


def celery_options(config: CeleryConfig) -> dict[str, Any]:
    """The Celery app options the executor and the workers share: the queue and the results
    backend (the broker is given apart)."""
    return {
        "backend": config.backend,
        # result_expires: an rpc:// reply queue (one per run) left unused goes after an hour
        "config_source": {"task_default_queue": config.queue, "result_expires": 3600},
    }


def build_executor(config: ExecutionConfig) -> dg.ExecutorDefinition | None:
    """The executor of every job; None keeps Dagster's default (multiprocess for a launched
    run, in process for ``materialize``)."""
    if config.executor == "in_process":
        return dg.in_process_executor
    if config.executor == "multiprocess":
        return dg.multiprocess_executor
    if config.executor == "celery":
        celery = config.celery
        return celery_executor.configured(
            {"broker": broker_config(celery), **celery_options(celery)}, name="celery"
        )
    return None
