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
