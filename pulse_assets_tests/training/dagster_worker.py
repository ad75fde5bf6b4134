"""Runs the retrain job for one round partition on the Dagster instance in $DAGSTER_HOME, in
this process, so a test can SIGKILL a real Dagster run mid-training (the run then stays
STARTED, as a killed run worker leaves it). Settings come from the JSON file named by $PULSE_TEST_SETTINGS, so the
job is reconstructable (``retrain_job``) for re-execution from the test process too.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import dagster as dg

from pulse_assets.config import Settings
from pulse_assets.definitions import build_definitions
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.defs.training import RETRAIN_JOB
from pulse_assets_tests.training.train_worker import install_step_hook

SETTINGS_ENV = "PULSE_TEST_SETTINGS"
PARTITION_TAG = "dagster/partition"  # how a run names its partition (execute_job takes no key)
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def retrain_job() -> dg.JobDefinition:
    settings = Settings.model_validate(json.loads(Path(os.environ[SETTINGS_ENV]).read_text()))
    return build_definitions(settings).resolve_job_def(RETRAIN_JOB)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-at-step", type=int)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--round", required=True, help="the round partition to materialize")
    args = parser.parse_args()
    install_step_hook(Path(args.progress), hold_at_step=args.hold_at_step)
    # Run as __main__, this module's own function would point Dagster at a file; name the module.
    from pulse_assets_tests.training import dagster_worker

    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(dagster_worker.retrain_job),
            instance,
            run_config=IN_PROCESS,
            tags={TRIGGER_TAG: "manual", PARTITION_TAG: args.round},
        )
    print(json.dumps({"run_id": result.run_id, "success": result.success}))


if __name__ == "__main__":
    main()
