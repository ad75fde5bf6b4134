"""Materialization metadata shared by the asset factories: shape, schema, time range, version."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.storage import content_hash

SIGNIFICANT_FIGURES = 4

# What a column of a forecast table holds, by the start of its name.
COLUMN_MEANINGS = {
    "forecast_": "forecast by the version that was champion that day",
    "shadow_": "forecast by the round's challenger, in the shadow",
    "uniform_twin_": "forecast by the challenger's uniform-weight twin (trained without the "
    "curriculum; the challenger itself when it trained with uniform weights)",
    "naive_": "naive persistence: the latest realized value",
    "trailing_mean_": "trailing mean of |r| (baselines.trailing_days)",
    "ewma_": "EWMA (RiskMetrics) forecast of |r|",
    "garch_": "GARCH(1,1)-t forecast of |r| (EWMA when the round's fit failed)",
    "actual_": "what happened: the label of the day (the next trading day's value)",
    "error_": "champion's forecast minus actual",
    "naive_error_": "naive forecast minus actual",
    "adjusted_": "champion's forecast adjusted by the active rules",
    "adjusted_error_": "rule-adjusted forecast minus actual",
    "label_": "target: the next trading day's value (never an input)",
}
COLUMN_MEANINGS_EXACT = {
    "date": "the day (the partition's day, or a day of the round)",
    "entity": "what the row is about",
    "model_version": "the version that was champion that day (from the alias audit)",
    "challenger_version": "the round's challenger, forecasting in the shadow",
    "in_sample": "whether the day was inside the forecasting version's training",
    "round": "the training round the day belongs to",
    "active_rule_ids": "the rules in force that day, in the order they apply",
    "rules_fired": "how many of them fired that day",
}


def column_description(name: str) -> str | None:
    """What column ``name`` holds (the longest matching prefix wins), or None."""
    if name in COLUMN_MEANINGS_EXACT:
        return COLUMN_MEANINGS_EXACT[name]
    matches = [prefix for prefix in COLUMN_MEANINGS if name.startswith(prefix)]
    return COLUMN_MEANINGS[max(matches, key=len)] if matches else None


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 significant figures, so the UI shows 0.004495, not 0.004494734467626935."""
    return {
        key: float(f"{value:.{SIGNIFICANT_FIGURES}g}") if isinstance(value, float) else value
        for key, value in figures.items()
    }


def frame_metadata(
    frame: pl.DataFrame,
    time_column: str | None = "date",
    descriptions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Rows, column schema (each column described: ``descriptions`` first, then the shared
    meanings above), time range and content hash of a table."""
    given = descriptions or {}
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name, str(dtype), description=given.get(name) or column_description(name)
            )
            for name, dtype in frame.schema.items()
        ]
    )
    metadata: dict[str, Any] = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "content_hash": content_hash(frame),
    }
    if time_column is not None:
        times = frame.get_column(time_column) if frame.height else None
        metadata["first_date"] = str(times.min()) if times is not None else "none"
        metadata["last_date"] = str(times.max()) if times is not None else "none"
    return metadata


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


def embedded_charts(charts: list[Path]) -> dict[str, Any]:
    """Each PNG as markdown metadata ``chart_<file stem>``, the image inline (a data URI), so
    the asset page shows it without a file server (behind the row's [Show Markdown]: the UI
    folds long markdown)."""
    return {
        f"chart_{chart.stem}": dg.MetadataValue.md(
            f"![{chart.stem}](data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()})"
        )
        for chart in charts
    }
