"""The Celery app a Pulse worker runs: the steps that jobs send with ``execution.executor:
celery`` execute here, in the worker's processes.

    celery -A pulse_assets.defs.celery_worker worker -Q pulse --concurrency 1 -n pulse-1@%h

The worker reads the same settings as the Dagster code (``PULSE_PROFILE`` or
``PULSE_CONFIG``): the broker from ``$PULSE_CELERY_BROKER`` (or ``execution.celery.broker``),
the queue and the results backend. It needs the same code, the same ``PULSE_HOME`` locations
(store, SQL store, MLflow) and access to the Dagster instance, whose location each step
carries. ``-Q`` may be left out: the app listens on ``execution.celery.queue`` by default.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Exchange, Queue

from pulse_assets.config import load_settings
from pulse_assets.defs.execution import broker_url, celery_options

_celery = load_settings().execution.celery
app = make_app(
    CeleryExecutor.for_cli(broker=broker_url(_celery), **celery_options(_celery)).app_args()
)
# The queue as the executor's side declares it when it first sends to it (a direct exchange
# of the same name), so a worker and a run agree whichever starts first.
app.conf.task_queues = [Queue(_celery.queue, Exchange(_celery.queue, "direct"), _celery.queue)]
execute_plan = create_task(app)
