"""The command line's progress lines, read from a real run's event log while it goes on."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from pulse_assets.cli import QUIET_CONSOLE, Progress
from pulse_assets.definitions import build_definitions
from pulse_assets.defs.jobs import MAIN_JOB
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.raw import raw_key


def test_progress_names_each_step_as_it_finishes(small_settings, capsys: pytest.CaptureFixture):
    job = build_definitions(small_settings).resolve_job_def(MAIN_JOB)
    run_id = str(uuid.uuid4())
    sources = len(small_settings.sources)
    with dg.instance_for_test() as instance, Progress(instance, run_id, sources, every_s=0.05):
        result = job.execute_in_process(
            instance=instance,
            tags=range_tags("2016-01-01", "2016-03-31"),
            run_config=QUIET_CONSOLE,
            asset_selection=[raw_key(name) for name in small_settings.sources],
            run_id=run_id,
        )
    assert result.success
    lines = capsys.readouterr().out.splitlines()
    done = [line.split()[0] for line in lines if " done; steps " in line]
    steps = {"raw/market_prices", "raw/political_polls", "raw/social_activity"}
    assert steps <= set(done), lines
    assert len(done) == len(set(done)), f"a step reported twice: {lines}"
    assert f"steps {sources}/{sources} (100%)" in lines[-1], lines
    assert "ETA" in lines[0] and "(33%)" in lines[0], lines
