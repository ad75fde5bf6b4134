"""Materialization metadata shared by the asset factories: shape, schema, time range, version."""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.storage import content_hash


def frame_metadata(frame: pl.DataFrame, time_column: str = "date") -> dict[str, Any]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    times = frame.get_column(time_column) if frame.height else None
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "first_date": str(times.min()) if times is not None else "none",
        "last_date": str(times.max()) if times is not None else "none",
        "content_hash": content_hash(frame),
    }


def versioned_output(frame: pl.DataFrame, metadata: dict[str, Any]) -> dg.Output[pl.DataFrame]:
    """An output whose data version is the content hash: same data, same version."""
    version = metadata["content_hash"]
    return dg.Output(frame, metadata=metadata, data_version=dg.DataVersion(version))


def markdown_table(frame: pl.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A small frame as a markdown table for the UI (first ``max_rows`` rows), every header
    and cell escaped: values may be text from outside (source rows, LLM answers)."""
    shown = frame.head(max_rows)
    header = "| " + " | ".join(escape_markdown(name) for name in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    rows = [
        "| " + " | ".join(escape_markdown(str(value)) for value in row) + " |"
        for row in shown.iter_rows()
    ]
    return dg.MetadataValue.md("\n".join([header, rule, *rows]))


def escape_markdown(text: str) -> str:
    """Outside text (LLM answers, rule definitions) as literal inline markdown: HTML and
    markdown characters escaped, line breaks as spaces, so it can neither break a table row
    nor inject markup or links."""
    flat = " ".join(text.split())
    html = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", html)
