"""Raw data sources (the plan's ingestion plugins) and their schema validation."""

from pulse_assets.ingest.base import Source, load_source
from pulse_assets.ingest.run import WindowIngest, ingest_window
from pulse_assets.ingest.validation import ValidatedFrame, validate

__all__ = ["Source", "ValidatedFrame", "WindowIngest", "ingest_window", "load_source", "validate"]
