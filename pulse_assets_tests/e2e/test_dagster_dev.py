"""End to end: `dagster dev` (webserver and daemon) runs a backfill of six training rounds
(models/forecast_model, which reads its own previous round) and then one of the same rounds of
evaluation/retrodiction, each launched, watched and inspected over GraphQL as the UI does, each
one run for the whole range; the daemon's freshness evaluation reports a just-materialized
asset healthy and one past its fail window degraded."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml

from pulse_assets.config import REPO_ROOT, Settings
from pulse_assets.storage import PartitionStore
from pulse_assets_tests.conftest import populate_store, small_config
from pulse_assets_tests.ports import free_port
from pulse_assets_tests.processes import stop_group

pytestmark = pytest.mark.e2e
# Every round of SMALL_ROUNDS over small_config's span, from the first: each reads its previous.
ROUNDS = ["2016-07-01", "2016-08-01", "2016-09-01", "2016-10-01", "2016-11-01", "2016-12-01"]
MODEL, RETRODICTION = ["models", "forecast_model"], ["evaluation", "retrodiction"]
RAW, FEATURES = ["raw", "market_prices"], ["features", "daily_features"]
# Raw data goes stale fast here (Dagster's shortest windows are 60 s): materialized at the
# start, it must be DEGRADED by the end; features keep the default 54 h window: HEALTHY.
RAW_WARN_HOURS, RAW_FAIL_HOURS = 0.02, 0.03  # 72 s, 108 s
FRESH_DAY = "2016-06-01"  # not the latest day, so the automation sensor does not follow it
TERMINAL = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def wait_until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last})")


@pytest.fixture
def served(tmp_path):
    raw = small_config(
        tmp_path, freshness={"raw_warn_hours": RAW_WARN_HOURS, "raw_fail_hours": RAW_FAIL_HOURS}
    )
    settings = Settings.model_validate(raw)
    populate_store(settings, date(2015, 1, 1), date(2016, 12, 31))
    config_file = tmp_path / "pulse.yaml"
    # Key order kept: the schema's column order decides the stored partitions' column order,
    # which must match that of the partitions populate_store wrote from ``raw``.
    config_file.write_text(
        yaml.safe_dump(json.loads(json.dumps(raw, default=str)), sort_keys=False)
    )
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    port = free_port()
    env = os.environ | {
        "DAGSTER_HOME": str(dagster_home),
        "PULSE_HOME": str(tmp_path),
        "PULSE_CONFIG": str(config_file),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "2",  # Dagster's default evaluates every 30 s
    }
    log = (tmp_path / "dagster_dev.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-m",
            "pulse_assets.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready():
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/server_info", timeout=5
            ) as response:
                return response.status == 200
        except OSError:
            return server.poll() is not None and pytest.fail(
                f"dagster dev exited: {(tmp_path / 'dagster_dev.log').read_text()[-3000:]}"
            )

    try:
        wait_until(ready, 180, "the Dagster webserver")
        yield port, tmp_path
    finally:
        stop_group(server)
        log.close()


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 10) { runId status } }
    ... on PythonError { message }
  }
}"""
ASSET = """
query Asset($key: [String!]!) {
  assetOrError(assetKey: {path: $key}) {
    ... on Asset { assetMaterializations(limit: 200) { partition runId } }
    ... on AssetNotFoundError { message }
  }
  assetNodes(assetKeys: [{path: $key}]) {
    dependencyKeys { path }
    dependedByKeys { path }
  }
}"""
FRESHNESS = """
query Freshness($key: [String!]!) {
  assetNodes(assetKeys: [{path: $key}]) {
    freshnessStatusInfo { freshnessStatus freshnessStatusMetadata { lastMaterializedTimestamp } }
  }
}"""


def launch_backfill(port: int, names: list[str], keys: list[list[str]], title: str) -> str:
    launched = graphql(
        port,
        LAUNCH,
        {
            "params": {
                "partitionNames": names,
                "assetSelection": [{"path": key} for key in keys],
                "title": title,
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def finished_backfill(port: int, backfill_id: str, timeout_s: float, log: Path) -> dict:
    """The backfill's final status; it must have succeeded."""

    def finished():
        status = graphql(port, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return status if status["status"] in TERMINAL else None

    status = wait_until(finished, timeout_s, f"backfill {backfill_id}")
    assert status["status"] == "COMPLETED_SUCCESS", (status, log.read_text()[-4000:])
    return status


def freshness(port: int, key: list[str]) -> dict:
    """``freshnessStatusInfo`` of one asset: HEALTHY, WARNING, DEGRADED (past the fail window),
    UNKNOWN (not evaluated, or never materialized) or NOT_APPLICABLE (no policy)."""
    nodes = graphql(port, FRESHNESS, {"key": key})["assetNodes"]
    assert len(nodes) == 1 and nodes[0]["freshnessStatusInfo"] is not None, (key, nodes)
    return nodes[0]["freshnessStatusInfo"]


def materialized_by(port: int, key: list[str]) -> tuple[dict[str, set[str]], dict]:
    """Each partition's materializing run ids, and the asset's node (its lineage)."""
    asset = graphql(port, ASSET, {"key": key})
    runs: dict[str, set[str]] = {}
    for event in asset["assetOrError"].get("assetMaterializations", []):
        runs.setdefault(event["partition"], set()).add(event["runId"])
    return runs, asset["assetNodes"][0]


def lineage(node: dict, direction: str) -> set[tuple[str, ...]]:
    return {tuple(k["path"]) for k in node[direction]}


def backfill_rounds(port: int, key: list[str], log: Path) -> str:
    """A backfill of ROUNDS of one asset: one run for the range, every round materialized."""
    backfill_id = launch_backfill(port, ROUNDS, [key], f"{'/'.join(key)} rounds e2e")
    status = finished_backfill(port, backfill_id, 600, log)
    assert status["numPartitions"] == len(ROUNDS)
    assert len(status["runs"]) == 1, status  # BackfillPolicy.single_run: the range in one run
    run_id = status["runs"][0]["runId"]
    runs, _ = materialized_by(port, key)
    assert {p for p, ids in runs.items() if run_id in ids} == set(ROUNDS), runs
    return run_id


def test_backfills_of_rounds_over_graphql(served):
    port, tmp_path = served
    log = tmp_path / "dagster_dev.log"
    fresh_id = launch_backfill(port, [FRESH_DAY], [RAW, FEATURES], "freshness e2e")
    finished_backfill(port, fresh_id, 300, log)
    healthy = wait_until(
        lambda: (info := freshness(port, FEATURES))["freshnessStatus"] == "HEALTHY" and info,
        60,
        "features/daily_features to be HEALTHY right after its materialization",
    )
    materialized_at = healthy["freshnessStatusMetadata"]["lastMaterializedTimestamp"]
    assert time.time() - materialized_at < RAW_FAIL_HOURS * 3600

    model_run = backfill_rounds(port, MODEL, log)
    retrodiction_run = backfill_rounds(port, RETRODICTION, log)
    assert model_run != retrodiction_run

    _, model_node = materialized_by(port, MODEL)
    assert lineage(model_node, "dependencyKeys") == {
        ("features", "daily_features"),
        ("features", "daily_labels"),
        ("models", "forecast_model"),  # its own previous round
    }
    _, node = materialized_by(port, RETRODICTION)
    assert lineage(node, "dependencyKeys") == {
        ("features", "daily_features"),
        ("features", "daily_labels"),
        ("models", "forecast_model"),
    }
    assert ("evaluation", "retrodiction") in lineage(model_node, "dependedByKeys")

    # The data moved along that lineage: each round's retrodiction was forecast by the
    # champion its model round decided, out of sample.
    store = PartitionStore(tmp_path / "store")
    records = store.read("models/forecast_model", ROUNDS)
    assert records.get_column("round").sort().to_list() == ROUNDS
    assert records.sort("start").item(0, "decision") == "first model: no champion to beat"
    champions = dict(zip(records["round"], records["champion"], strict=True))
    frame = store.read("evaluation/retrodiction", ROUNDS)
    assert set(frame.get_column("round")) == set(ROUNDS)
    assert not frame.get_column("in_sample").any()
    served_by = frame.select("round", "model_version").unique()
    assert served_by.height == len(ROUNDS), served_by
    assert (served_by["model_version"] == served_by["round"].replace(champions)).all()
    assert frame.filter(pl.col("model_version").is_null()).height == 0

    # raw/market_prices was materialized once, with the features, at the start: past its
    # 108 s fail window the daemon must report it DEGRADED (HEALTHY and WARNING before that).
    degraded = wait_until(
        lambda: (info := freshness(port, RAW))["freshnessStatus"] == "DEGRADED" and info,
        RAW_FAIL_HOURS * 3600 + 60,
        "raw/market_prices to be DEGRADED past its fail window",
    )
    stale_for = time.time() - degraded["freshnessStatusMetadata"]["lastMaterializedTimestamp"]
    assert stale_for >= RAW_FAIL_HOURS * 3600
    assert freshness(port, FEATURES)["freshnessStatus"] == "HEALTHY"
