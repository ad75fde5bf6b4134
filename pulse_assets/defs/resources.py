"""Resources: the partition store and the IO manager that writes one Parquet file per partition."""

from __future__ import annotations

import functools

import dagster as dg
import polars as pl
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from pulse_assets.errors import StoreError
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.rules.repository import RuleRepository
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.partition_store import UNPARTITIONED_KEY
from pulse_assets.storage.s3 import is_s3_url
from pulse_assets.storage.sql import connect
from pulse_assets.training.audit import AliasAudit
from pulse_assets.training.registry import ModelRegistry


def table_name(asset_key: dg.AssetKey) -> str:
    return "/".join(asset_key.path)


class PartitionStoreResource(dg.ConfigurableResource):
    """The Parquet partition store at ``root``: a local folder or ``s3://bucket/prefix``,
    whose S3 client comes from dagster-aws's ``S3Resource`` (endpoint, region, retries;
    credentials from the environment's AWS chain)."""

    root: str
    s3: S3Resource

    def get(self) -> PartitionStore:
        client = self.s3.get_client() if is_s3_url(self.root) else None
        return PartitionStore(self.root, s3_client=client)


PARTITION_KEY_COLUMN = "__partition"
READ_EXISTING_ONLY = "pulse/read_existing_only"


MULTI_KEY_SEPARATOR = "|"  # how Dagster joins the dimensions of a multi-partition key


def _multi_partition_keys(
    frame: pl.DataFrame, partitions_def: dg.MultiPartitionsDefinition
) -> pl.Expr:
    """Each row's multi-partition key: its value in every dimension's column (the column named
    like the dimension), joined in Dagster's order. A time dimension must be daily, whose key
    is the ISO date, so ``date`` cast to text is its key."""
    names = partitions_def.partition_dimension_names
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise StoreError(
            f"a frame of a multi-partitioned asset needs a column per dimension; {missing} "
            f"missing from {frame.columns}: return the dimension columns with the rows"
        )
    if partitions_def.has_time_window_dimension:
        time_dimension = partitions_def.time_window_dimension
        daily = time_dimension.partitions_def
        if (
            not isinstance(daily, dg.TimeWindowPartitionsDefinition)
            or daily.fmt != "%Y-%m-%d"
            or daily.cron_schedule != "0 0 * * *"
        ):
            raise StoreError(
                f"multi-partition dimension {time_dimension.name!r} must be daily (%Y-%m-%d "
                "keys) for the store to key rows by their date"
            )
    return pl.concat_str(
        [pl.col(name).cast(pl.String) for name in names], separator=MULTI_KEY_SEPARATOR
    )


def _by_partition(frame: pl.DataFrame, context: dg.OutputContext) -> pl.DataFrame:
    """``frame`` with the key of the time window each row's ``date`` falls in: a day's own key
    for daily partitions, the round's key for rows of a round; for a day × entity partition,
    the row's date and entity joined as Dagster joins them ("1988-01-05|CA")."""
    partitions_def = context.asset_partitions_def
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        keys = _multi_partition_keys(frame, partitions_def)
        return frame.with_columns(keys.alias(PARTITION_KEY_COLUMN))
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return frame.with_columns(pl.col("date").cast(pl.String).alias(PARTITION_KEY_COLUMN))
    spans = [
        (key, partitions_def.time_window_for_partition_key(key))
        for key in context.asset_partition_keys
    ]
    windows = pl.DataFrame(
        [(key, span.start.date(), span.end.date()) for key, span in spans],
        schema={PARTITION_KEY_COLUMN: pl.String, "__start": pl.Date, "__end": pl.Date},
        orient="row",
    ).sort("__start")
    keyed = frame.sort("date", maintain_order=True).join_asof(
        windows, left_on="date", right_on="__start"
    )
    inside = pl.col("date") < pl.col("__end")
    return keyed.with_columns(
        pl.when(inside).then(pl.col(PARTITION_KEY_COLUMN)).alias(PARTITION_KEY_COLUMN)
    ).drop("__start", "__end")


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars frames: a partitioned asset as one file per partition key.

    An output over a partition range is split by the time window each row's ``date`` falls
    in, and every key in the range is replaced, with an empty file where the range has no
    rows (weekends). An input over a range reads exactly the files of that range; an input
    whose definition metadata sets ``READ_EXISTING_ONLY`` (a round reading the rounds before
    it) reads those of its partitions that exist.
    """

    store: PartitionStoreResource

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        store = self.store.get()
        table = table_name(context.asset_key)
        if context.has_asset_partitions:
            keyed = _by_partition(obj, context)
            rows = store.write_partitions(
                table,
                keyed,
                context.asset_partition_keys,
                key_column=PARTITION_KEY_COLUMN,
                keep_key_column=False,
            )
            empty = sum(1 for count in rows.values() if count == 0)
            context.log.debug(f"wrote {len(rows)} partition(s) of {table}, {empty} empty")
        else:
            store.write(table, UNPARTITIONED_KEY, obj)
        context.add_output_metadata({"store_path": str(store.table_path(table))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        store = self.store.get()
        table = table_name(context.asset_key)
        if not context.has_asset_partitions:
            return store.read(table, [UNPARTITIONED_KEY])
        keys = context.asset_partition_keys
        if (context.definition_metadata or {}).get(READ_EXISTING_ONLY):
            present = set(store.keys(table))
            keys = [key for key in keys if key in present]
            if not keys:
                return pl.DataFrame()
        return store.read(table, keys)


@functools.cache
def _engine(url: str) -> sa.Engine:
    return connect(url)


class SqlStoreResource(dg.ConfigurableResource):
    """The metrics and audit store: any SQLAlchemy URL (SQLite in PULSE_HOME by default)."""

    url: str

    def engine(self) -> sa.Engine:
        return _engine(self.url)

    def metrics(self) -> MetricsStore:
        return MetricsStore(self.engine())

    def rules(self) -> RuleRepository:
        return RuleRepository(self.engine())


class RegistryResource(dg.ConfigurableResource):
    """MLflow tracking and model registry (aliases champion/challenger) plus the alias audit."""

    tracking_uri: str
    artifacts_uri: str
    model_name: str
    experiment: str
    retries: int = 2
    timeout_s: float = 10.0
    sql: SqlStoreResource

    def get(self) -> ModelRegistry:
        return ModelRegistry(
            self.tracking_uri,
            self.model_name,
            self.experiment,
            self.artifacts_uri,
            AliasAudit(self.sql.engine()),
            retries=self.retries,
            timeout_s=self.timeout_s,
        )
