"""Where data lives: the Parquet partition store (local or S3-compatible)."""

from pulse_assets.storage.partition_store import PartitionStore, content_hash

__all__ = ["PartitionStore", "content_hash"]
