"""Markdown metadata: every cell of a table is escaped, whatever the frame holds."""

from __future__ import annotations

import polars as pl
from markdown_it import MarkdownIt

from pulse_assets.defs.metadata import markdown_table

RENDERER = MarkdownIt("commonmark").enable(["table"])


def test_a_quarantined_value_from_a_source_renders_as_one_literal_cell() -> None:
    reason = "margin=<img src=x onerror=alert(1)> | **x** is not a float"
    table = markdown_table(pl.DataFrame({"quarantine_reason": [reason], "count": [3]}))
    html = RENDERER.render(table.value)
    assert "<img" not in html and "<strong" not in html
    assert html.count("<td>") == 2, html  # the pipe inside the value did not split the row
    assert "margin=&lt;img src=x onerror=alert(1)&gt; | **x** is not a float" in html


def test_floats_are_shown_to_four_significant_figures_and_columns_say_what_they_hold() -> None:
    from pulse_assets.defs.metadata import column_description, rounded

    assert rounded({"rmse": 0.004494734467626935, "rows": 12, "name": "x"}) == {
        "rmse": 0.004495,
        "rows": 12,
        "name": "x",
    }
    assert column_description("naive_error_sp500_abs_return_next") == "naive forecast minus actual"
    assert column_description("naive_sp500_abs_return_next").startswith("naive persistence")
    assert column_description("sp500_log_return") is None


def test_raw_columns_are_described_by_their_declared_schema(real_raw_frames) -> None:
    from pulse_assets.config import load_settings
    from pulse_assets.defs.metadata import frame_metadata
    from pulse_assets.defs.raw import raw_descriptions

    settings = load_settings()
    for name, config in settings.sources.items():
        schema = frame_metadata(real_raw_frames[name], descriptions=raw_descriptions(name, config))[
            "dagster/column_schema"
        ]
        blank = [column.name for column in schema.columns if not column.description]
        assert not blank, f"raw/{name}: columns without a description: {blank}"
    described = raw_descriptions("market_prices", settings.sources["market_prices"])
    assert described["volume"].startswith("int >= 0, from market_prices")
