"""The partition store, checkpoints and MLflow artifacts on a real S3-compatible server
(moto's standalone server on 127.0.0.1, started here), and what an outage does to them."""

from __future__ import annotations

import copy
import io
import logging
import traceback
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
import yaml
from dagster_aws.s3 import S3Resource
from polars.testing import assert_frame_equal

from pulse_assets.config import (
    S3Config,
    Settings,
    artifacts_uri,
    checkpoints_root,
    load_settings,
)
from pulse_assets.defs.features import FEATURES_KEY, LABELS_KEY
from pulse_assets.defs.partitions import range_tags
from pulse_assets.defs.raw import raw_key
from pulse_assets.errors import ConfigError, StoreError
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.s3 import open_root, redact
from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.checkpoints import CheckpointError, CheckpointStore
from pulse_assets.training.dataset import Dataset
from pulse_assets.training.registry import DatasetCard, ModelRegistry, TrainingRecord
from pulse_assets.training.trainer import EpochRecord, train
from pulse_assets_tests.conftest import small_config
from pulse_assets_tests.s3_server import (
    PLANTED_SECRET,
    REGION,
    CuttingProxy,
    MotoServer,
    aws_environment,
    moto_server,
)

MONTH = [(date(2016, 3, 1) + timedelta(days=n)).isoformat() for n in range(31)]


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as running:
        yield running


@pytest.fixture
def s3(server: MotoServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """A client built by dagster-aws's S3Resource (as the code location builds the store's),
    on a bucket of this test's own; credentials only in the environment."""
    aws_environment(monkeypatch)
    client = S3Resource(endpoint_url=server.endpoint, region_name=REGION, max_attempts=2)
    bucket = request.node.name.replace("_", "-")[:50].strip("-").lower()
    s3_client = client.get_client()
    s3_client.create_bucket(Bucket=bucket)
    return s3_client, bucket


def object_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def month_rows(seed: int, rows_per_day: int = 3) -> pl.DataFrame:
    """Rows for the weekdays of March 2016 (weekends stay empty partitions)."""
    days = [date.fromisoformat(key) for key in MONTH if date.fromisoformat(key).weekday() < 5]
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "date": [day for day in days for _ in range(rows_per_day)],
            "entity": [f"E{n}" for _ in days for n in range(rows_per_day)],
            "value": rng.normal(size=len(days) * rows_per_day),
        }
    )


def test_a_month_of_partitions_round_trips_through_the_dagster_aws_client(s3):
    client, bucket = s3
    store = PartitionStore(f"s3://{bucket}/pulse", s3_client=client)
    frame = month_rows(seed=1)
    counts = store.write_partitions("raw/x", frame, MONTH)
    assert sum(counts.values()) == frame.height and counts["2016-03-05"] == 0  # a Saturday
    assert store.keys("raw/x") == MONTH
    assert_frame_equal(store.read_range("raw/x", MONTH[0], MONTH[-1]), frame)
    saturday = store.read("raw/x", ["2016-03-05"])
    assert saturday.height == 0 and saturday.schema == frame.schema
    # exactly one object per partition: no temp objects, nothing outside the prefix
    assert object_keys(client, bucket) == [f"pulse/raw/x/{key}.parquet" for key in MONTH]

    replaced = month_rows(seed=2).filter(pl.col("date") == date(2016, 3, 1))
    store.write_partitions("raw/x", replaced, ["2016-03-01"])
    assert_frame_equal(store.read("raw/x", ["2016-03-01"]), replaced)
    with pytest.raises(StoreError, match=r"1 partition\(s\) of raw/x are not in the store"):
        store.read("raw/x", ["2016-04-01"])


RAW_KEYS = [raw_key(name) for name in ("market_prices", "political_polls", "social_activity")]


def materialize(settings: Settings, instance: dg.DagsterInstance, keys: list, first, last) -> None:
    from pulse_assets.definitions import build_assets, build_resources

    result = dg.materialize(
        build_assets(settings),
        selection=keys,
        resources=build_resources(settings),
        instance=instance,
        tags=range_tags(first, last),
    )
    assert result.success, f"materializing {keys} for {first}..{last} failed"


def test_raw_and_features_for_a_month_materialize_on_s3_as_they_do_locally(
    s3, server, tmp_path, monkeypatch
):
    """The unchanged code location on ``store.root: s3://...``; the endpoint from the standard
    AWS_ENDPOINT_URL_S3. The S3 store must hold what a local store holds, value for value."""
    client, bucket = s3
    aws_environment(monkeypatch, endpoint=server.endpoint)
    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "home"))
    first, last = "2016-03-01", "2016-03-31"
    stores = {}
    for where, root in (("s3", f"s3://{bucket}/pulse"), ("local", str(tmp_path / "store"))):
        (tmp_path / where).mkdir()
        settings = Settings.model_validate(small_config(tmp_path / where, store={"root": root}))
        lookback = timedelta(days=settings.features.lookback_days())
        raw_first = (date.fromisoformat(first) - lookback).isoformat()
        with dg.instance_for_test() as instance:
            materialize(settings, instance, RAW_KEYS, raw_first, last)
            materialize(settings, instance, [FEATURES_KEY, LABELS_KEY], first, last)
        stores[where] = PartitionStore(root)
    for table in ("raw/market_prices", "features/daily_features", "features/daily_labels"):
        on_s3 = stores["s3"].read_range(table, first, last)
        assert on_s3.height > 0, f"{table} is empty on S3"
        assert_frame_equal(on_s3, stores["local"].read_range(table, first, last))
    keys = object_keys(client, bucket, "pulse/features/daily_features/")
    assert len(keys) == 31 and keys[0].endswith("2016-03-01.parquet")


def synthetic_data(rows: int = 160, seed: int = 5) -> tuple[Dataset, Dataset]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 3)).astype(np.float32)
    labels = (
        features @ np.array([[0.5], [-0.2], [0.1]]) + 0.1 * rng.normal(size=(rows, 1))
    ).astype(np.float32)
    dates = np.array([np.datetime64("2015-01-01") + n for n in range(rows)])
    data = Dataset(dates, features, labels, ("a", "b", "c"), ("y",))
    split = int(rows * 0.8)
    return data.rows(slice(0, split)), data.rows(slice(split, rows))


class Interrupted(Exception):
    """Stands for a crash after an epoch's checkpoint was saved."""


def training_config(settings: Settings) -> Any:
    raw = settings.training.model_dump()
    raw["model"] = {"kind": "mlp", "hidden_sizes": [8], "dropout": 0.0}
    raw["optimizer"] |= {"epochs": 6, "patience": 50, "batch_size": 32, "seed": 3}
    return type(settings.training).model_validate(raw)


def test_training_checkpoints_on_s3_resume_to_the_same_weights_and_mlflow_logs_there(
    s3, server, tmp_path, monkeypatch
):
    client, bucket = s3
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", server.endpoint)
    raw = copy.deepcopy(small_config(tmp_path))
    raw["s3"] = {"endpoint_url": server.endpoint, "region": REGION, "max_attempts": 2}
    raw["training"]["checkpoints_root"] = f"s3://{bucket}/checkpoints/"
    raw["training"]["tracking"]["artifacts_uri"] = f"s3://{bucket}/mlflow"
    settings = Settings.model_validate(raw)
    config = training_config(settings)
    fit, valid = synthetic_data()

    whole = train(fit, valid, config, CheckpointStore(tmp_path / "local", "run"))
    root = open_root(checkpoints_root(settings), settings.s3)
    on_s3 = CheckpointStore(root, "run", keep=2)

    def crash_after_epoch_3(record: EpochRecord) -> None:
        if record.epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(fit, valid, config, on_s3, on_epoch_end=crash_after_epoch_3)
    assert on_s3.epochs() == [2, 3]
    assert object_keys(client, bucket, "checkpoints/") == [
        "checkpoints/run/epoch-00002.pt",
        "checkpoints/run/epoch-00003.pt",
    ]
    messages: list[str] = []
    resumed = train(fit, valid, config, CheckpointStore(root, "run", keep=2), log=messages.append)
    assert any("resuming training from checkpoint epoch 3" in m for m in messages), messages
    for name, tensor in whole.module.state_dict().items():
        assert torch.equal(tensor, resumed.module.state_dict()[name]), f"{name} differs"

    registry = ModelRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "s3_model",
        "s3-experiment",
        artifacts_uri(settings),
        AliasAudit(connect(f"sqlite:///{tmp_path / 'pulse.db'}")),
        retries=0,
    )
    record = TrainingRecord(
        params={"epochs": config.optimizer.epochs},
        losses={"val_loss": [(r.epoch, r.val_loss) for r in resumed.history]},
        dataset=DatasetCard("synthetic", "0" * 16, len(fit), {"a": "float"}, {"source": "test"}),
        config={"kind": "mlp"},
        version_tags={"training_id": "run"},
        run_name="s3-resumed",
        description="resumed from an S3 checkpoint",
    )
    info = registry.log_training(record, resumed.module)
    stored = object_keys(client, bucket, "mlflow/s3-experiment/")
    assert any(key.endswith(f"{info.run_id}/artifacts/model/weights.safetensors") for key in stored)
    loaded = registry.load(info.version)
    for name, tensor in resumed.module.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), f"{name} differs after S3"


def assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    text = "".join(traceback.format_exception(error))
    assert PLANTED_SECRET not in text, f"the planted secret is in the error: {text}"
    logged = [record.getMessage() for record in caplog.records]
    leaked = [line for line in logged if PLANTED_SECRET in line]
    assert not leaked, f"the planted secret was logged: {leaked[:3]}"


def test_a_put_cut_off_mid_body_fails_clearly_and_keeps_the_previous_object(
    s3, server, caplog, monkeypatch
):
    client, bucket = s3
    proxy = CuttingProxy(server.port)
    try:
        via_proxy = S3Resource(endpoint_url=proxy.endpoint, region_name=REGION, max_attempts=2)
        store = PartitionStore(f"s3://{bucket}/pulse", s3_client=via_proxy.get_client())
        day = ["2016-03-01"]
        before = month_rows(seed=1, rows_per_day=2000).filter(pl.col("date") == date(2016, 3, 1))
        store.write_partitions("raw/x", before, day)
        after = month_rows(seed=2, rows_per_day=2000).filter(pl.col("date") == date(2016, 3, 1))

        body = io.BytesIO()
        after.write_parquet(body, compression="zstd", statistics=False)
        assert body.tell() > 3 * 4096, "the body must be larger than the cut to be cut mid-body"
        proxy.cut_body_after = 4096
        caplog.set_level(logging.DEBUG)
        with pytest.raises(StoreError) as raised:
            store.write_partitions("raw/x", after, day)
        assert proxy.cuts >= 1, "the proxy never cut a request: the test proved nothing"
        message = str(raised.value)
        assert f"could not write s3://{bucket}/pulse/raw/x/2016-03-01.parquet" in message
        assert "the previous object, if any, is unchanged" in message
        assert_no_secret(raised.value, caplog)

        proxy.cut_body_after = None
        assert_frame_equal(store.read("raw/x", day), before)
        direct = PartitionStore(f"s3://{bucket}/pulse", s3_client=client)
        assert_frame_equal(direct.read("raw/x", day), before)
    finally:
        proxy.close()


def test_a_stopped_server_is_a_clear_error_naming_the_object_without_the_secret(
    tmp_path, caplog, monkeypatch
):
    """The real outage: the server process is gone. moto's state dies with it, so the
    previous object is checked by the proxy test above, not here."""
    aws_environment(monkeypatch)
    with moto_server() as alone:
        config = S3Config(endpoint_url=alone.endpoint, region=REGION, max_attempts=2)
        client = S3Resource(endpoint_url=alone.endpoint, region_name=REGION).get_client()
        client.create_bucket(Bucket="outage")
        store = PartitionStore("s3://outage/pulse", s3=config)
        store.write_partitions("raw/x", month_rows(seed=1), MONTH)
        checkpoints = CheckpointStore(open_root("s3://outage/checkpoints", config), "run")
        checkpoints.save(1, {"epoch": 1})
        alone.stop()

        caplog.set_level(logging.DEBUG)
        with pytest.raises(StoreError, match="S3 endpoint is unreachable") as raised:
            store.write_partitions("raw/x", month_rows(seed=2), MONTH)
        assert "could not write s3://outage/pulse/raw/x/2016-03-" in str(raised.value)
        assert_no_secret(raised.value, caplog)
        with pytest.raises(StoreError, match="could not list s3://outage/pulse/raw/x"):
            store.keys("raw/x")
        with pytest.raises(CheckpointError, match="checkpoints/run") as failed:
            checkpoints.save(2, {"epoch": 2})
        assert "unreachable" in str(failed.value)
        assert_no_secret(failed.value, caplog)


def test_credentials_in_a_config_file_are_refused_without_echoing_them(tmp_path):
    path = tmp_path / "pulse.yaml"
    raw = small_config(tmp_path)
    path.write_text(yaml.safe_dump(raw | {"s3": {"endpoint_url": "http://k:hunter22@minio:9000"}}))
    with pytest.raises(ConfigError, match="s3.endpoint_url: .*must not hold credentials") as url:
        load_settings(path)
    assert "hunter22" not in str(url.value)
    path.write_text(yaml.safe_dump(raw | {"s3": {"aws_secret_access_key": "hunter22"}}))
    with pytest.raises(ConfigError, match="s3.aws_secret_access_key: unknown key") as key:
        load_settings(path)
    assert "hunter22" not in str(key.value)


def test_artifact_and_checkpoint_locations_default_to_pulse_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "home"))
    settings = Settings.model_validate(small_config(tmp_path))
    assert artifacts_uri(settings) == (tmp_path / "home" / "mlartifacts").as_uri()
    assert checkpoints_root(settings) == str(tmp_path / "home" / "checkpoints")
    assert isinstance(open_root(checkpoints_root(settings)), Path)


def test_redact_masks_the_environment_secret_and_presigned_signatures(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    text = redact(f"bad {PLANTED_SECRET} at https://h/k?X-Amz-Signature=abc123&X-Amz-Date=1")
    assert PLANTED_SECRET not in text and "abc123" not in text and "X-Amz-Date=1" in text
