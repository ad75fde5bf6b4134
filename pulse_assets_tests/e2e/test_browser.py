"""End to end in a real browser: the demo (``python -m pulse_assets.cli demo``) on a small
span, then ``dagster dev`` on its data home, looked at in headless Chromium as a user would:
the global lineage page shows every asset group of the definitions, the scoreboard's asset
page shows its charts (PNG images decoded by the browser), and the ingest run's log loads.
Prints how long each page took to show what the test waits for (``pytest -s``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By

from pulse_assets.config import REPO_ROOT, Settings
from pulse_assets.definitions import build_definitions
from pulse_assets.defs.evaluation import SCOREBOARD_KEY
from pulse_assets.defs.jobs import MAIN_JOB
from pulse_assets_tests.conftest import small_config
from pulse_assets_tests.e2e.browser import Browser, dagster_dev, headless_chromium
from pulse_assets_tests.e2e.test_dagster_dev import graphql

pytestmark = pytest.mark.e2e
# Nine months of days and three monthly rounds: every group materialized in about a minute.
SPAN = {"start": "2016-04-01", "end": "2017-01-01", "timezone": "UTC"}
FIRST_ROUND, TRAINING_DAYS = "2016-10-01", 150
PAGE_TIMEOUT_S = 120  # a cold code server and a busy machine; a page that never shows fails
PNG_DATA_URI = "data:image/png;base64,"

RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job, statuses: [SUCCESS]}) {
    ... on Runs { results { runId } }
  }
}"""
EVENTS = """
query Events($id: ID!, $after: String) {
  logsForRun(runId: $id, afterCursor: $after) {
    ... on EventConnection { events { __typename } cursor hasMore }
    ... on PythonError { message }
  }
}"""
CHARTS = """
query Charts($key: [String!]!) {
  assetOrError(assetKey: {path: $key}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries { label ... on MarkdownMetadataEntry { mdStr } }
      }
    }
  }
}"""


@dataclass(frozen=True)
class DemoHome:
    root: Path
    settings: Settings
    env: dict[str, str]


@pytest.fixture
def demo_home(tmp_path: Path) -> Iterator[DemoHome]:
    """``make demo`` on a small span: its own PULSE_HOME, config, Dagster home and MLflow."""
    raw = small_config(tmp_path, partitions=SPAN)
    raw["rounds"]["start"] = FIRST_ROUND
    raw["training"]["window_days"] = TRAINING_DAYS
    config_file = tmp_path / "pulse.yaml"
    config_file.write_text(
        yaml.safe_dump(json.loads(json.dumps(raw, default=str)), sort_keys=False)
    )
    env = os.environ | {"PULSE_HOME": str(tmp_path), "PULSE_CONFIG": str(config_file)}
    log = tmp_path / "demo.log"
    started = time.perf_counter()
    with log.open("w") as out:
        demo = subprocess.run(
            [sys.executable, "-m", "pulse_assets.cli", "demo"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    assert demo.returncode == 0, f"the demo failed: {log.read_text()[-4000:]}"
    print(f"\ndemo over {SPAN['start']}..{SPAN['end']}: {time.perf_counter() - started:.1f} s")
    # What `make ui` exports beside the data home (Makefile).
    env |= {
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    }
    yield DemoHome(tmp_path, Settings.model_validate(raw), env)


def asset_groups(settings: Settings) -> set[str]:
    specs = build_definitions(settings).resolve_all_asset_specs()
    return {spec.group_name for spec in specs if spec.group_name}


def graph_groups(browser: Browser) -> set[str]:
    """Group names drawn in the lineage graph (its SVG, not the sidebar's list)."""
    nodes = browser.driver.find_elements(By.CSS_SELECTOR, "svg foreignObject.group [data-tooltip]")
    return {node.get_attribute("data-tooltip") or "" for node in nodes if node.is_displayed()}


def check_lineage(browser: Browser, groups: set[str]) -> float:
    seen: set[str] = set()

    def all_groups_drawn(_: object) -> bool:
        seen.clear()
        seen.update(graph_groups(browser))
        return groups <= seen

    _, seconds = browser.load(
        "/asset-groups",
        all_groups_drawn,
        PAGE_TIMEOUT_S,
        lambda: f"every asset group {sorted(groups)} in the lineage graph; drawn: {sorted(seen)}",
        "lineage",
    )
    browser.save("lineage")
    return seconds


def chart_keys(port: int) -> tuple[list[str], str]:
    """The scoreboard's metadata keys that hold a PNG chart, and the run that made them."""
    asset = graphql(port, CHARTS, {"key": SCOREBOARD_KEY.path})["assetOrError"]
    materializations = asset.get("assetMaterializations") or []
    assert materializations, f"{SCOREBOARD_KEY.to_user_string()} was never materialized: {asset}"
    latest = materializations[0]
    keys = [
        entry["label"]
        for entry in latest["metadataEntries"]
        if PNG_DATA_URI in (entry.get("mdStr") or "")
    ]
    assert keys, (
        f"no PNG chart (markdown with a {PNG_DATA_URI} image) in the metadata of "
        f"{SCOREBOARD_KEY.to_user_string()}: {[e['label'] for e in latest['metadataEntries']]}"
    )
    return keys, latest["runId"]


def show_markdown_link(key: str) -> tuple[str, str]:
    """The metadata row's link: Dagster shows markdown of 1,000 characters or more (every
    embedded PNG) behind ``[Show Markdown]``, which opens it in a dialog."""
    return (
        By.XPATH,
        f"//tr[td[1][normalize-space()='{key}']]//a[normalize-space()='[Show Markdown]']",
    )


def decoded_png(browser: Browser) -> tuple[int, int] | None:
    images = browser.driver.find_elements(By.XPATH, f"//img[starts-with(@src, '{PNG_DATA_URI}')]")
    sizes = [browser.image_size(image) for image in images if image.is_displayed()]
    return next((size for size in sizes if size[0] > 0), None)


def check_scoreboard(browser: Browser, keys: list[str]) -> tuple[float, dict[str, tuple]]:
    """Seconds until the asset page lists the first chart, and each chart's decoded size."""
    path = "/assets/" + "/".join(SCOREBOARD_KEY.path)
    _, seconds = browser.load(
        path,
        lambda driver: driver.find_elements(*show_markdown_link(keys[0])),
        PAGE_TIMEOUT_S,
        f"the metadata row {keys[0]!r} on {path}",
        "scoreboard",
    )
    sizes = {}
    for key in keys:
        links = browser.driver.find_elements(*show_markdown_link(key))
        if not links:
            raise browser.fail(f"scoreboard-{key}", f"no [Show Markdown] link in row {key!r}")
        browser.click(links[0])
        sizes[key] = browser.wait(
            lambda _: decoded_png(browser),
            30,
            f"the chart {key!r} displayed as a decoded PNG (naturalWidth > 0)",
            f"scoreboard-{key}",
        )
        browser.save(f"scoreboard-{key}")
        browser.click(browser.driver.find_element(By.XPATH, "//button[normalize-space()='Close']"))
        browser.wait(lambda _: decoded_png(browser) is None, 10, "the dialog to close", key)
    return seconds, sizes


def check_run_log(browser: Browser, run_id: str, job: str) -> float:
    finished = f'Finished execution of run for "{job}".'
    _, seconds = browser.load(
        f"/runs/{run_id}",
        lambda driver: driver.find_elements(By.XPATH, f"//*[normalize-space()='{finished}']"),
        PAGE_TIMEOUT_S,
        f"the run log of {run_id} down to its last event ({finished})",
        "run-log",
    )
    browser.save("run-log")
    return seconds


def event_count(port: int, run_id: str) -> int:
    """How many events the run's log page has to load (GraphQL pages them)."""
    count, after = 0, None
    while True:
        page = graphql(port, EVENTS, {"id": run_id, "after": after})["logsForRun"]
        assert "events" in page, page
        count += len(page["events"])
        if not page["hasMore"]:
            return count
        after = page["cursor"]


def test_lineage_groups_and_scoreboard_chart_in_chromium(demo_home: DemoHome, tmp_path: Path):
    groups = asset_groups(demo_home.settings)
    assert {"raw", "features", "models", "evaluation"} <= groups, groups
    evidence = tmp_path / "browser"
    with dagster_dev(demo_home.env, tmp_path / "dagster_dev.log") as port:
        graphql(port, "mutation { setNuxSeen }")  # no "join the community" dialog over the pages
        runs = graphql(port, RUNS, {"job": MAIN_JOB})["runsOrError"]["results"]
        assert len(runs) == 1, f"the demo should have run {MAIN_JOB} once: {runs}"
        main_run = runs[0]["runId"]
        events = event_count(port, main_run)
        keys, _ = chart_keys(port)
        with headless_chromium(f"http://127.0.0.1:{port}", evidence) as browser:
            lineage_s = check_lineage(browser, groups)
            asset_s, sizes = check_scoreboard(browser, keys)
            run_s = check_run_log(browser, main_run, MAIN_JOB)
    assert all(width > 100 and height > 100 for width, height in sizes.values()), sizes
    print(
        f"page load until shown (headless Chromium, dagster dev, screenshots in {evidence}):\n"
        f"  global lineage (/asset-groups, {len(groups)} groups): {lineage_s:.1f} s\n"
        f"  asset page (/assets/{'/'.join(SCOREBOARD_KEY.path)}, charts {sizes}): {asset_s:.1f} s\n"
        f"  run log (/runs/{main_run}, {MAIN_JOB}, {events} events): {run_s:.1f} s"
    )
