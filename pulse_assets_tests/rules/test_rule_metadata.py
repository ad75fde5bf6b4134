"""Rule text and LLM prose reach the Dagster markdown metadata escaped: rendered by a real
CommonMark renderer (with tables), they stay literal text in their own cell or list item."""

from __future__ import annotations

from datetime import date

import polars as pl
from markdown_it import MarkdownIt

from pulse_assets.defs.metadata import escape_markdown
from pulse_assets.defs.rules import in_force_markdown, state_table
from pulse_assets.rules.language import parse
from pulse_assets.rules.rounds import STATE_SCHEMA, ActiveRule, StateEntry

HOSTILE = (
    "calm | markets\n| injected | row |\n|---|---|\n<img src=x onerror=alert(1)> "
    "<script>alert(2)</script> `code` [click](javascript:alert(3)) ![i](http://x/i.png) "
    "**bold** _em_ ~~gone~~ # heading \\| &amp;"
)
RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def active(rule_id: str, definition: str = "IF a > 1 THEN y *= 0.9") -> ActiveRule:
    entry = StateEntry(rule_id, "y", definition, "llm", HOSTILE, date(2016, 1, 1), 0)
    return ActiveRule(entry, parse("IF a > 1 THEN y *= 0.9"))


def assert_no_markup(html: str) -> None:
    for tag in ("<img", "<script", "<a ", "<strong", "<em", "<code", "<h1", "<s>", "<del"):
        assert tag not in html, (tag, html)


def test_escaped_text_renders_as_itself() -> None:
    html = RENDERER.render(escape_markdown(HOSTILE))
    assert_no_markup(html)
    assert html.count("<p>") == 1  # one paragraph: the line breaks are gone
    text = " ".join(HOSTILE.split())
    for fragment in ("<script>alert(2)</script>", "[click](javascript:alert(3))", "**bold**"):
        assert fragment.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "&amp;amp;" in html and text.count("|") == html.count("|")


def test_the_state_table_keeps_its_shape_with_hostile_cells() -> None:
    rows = [
        {"round": "2016-01-01", "rule_id": "r1", "status": "activated", "reason": HOSTILE},
        {"round": "2016-02-01", "rule_id": "r2", "status": "retired", "definition": HOSTILE},
        {"round": "2016-02-01", "rule_id": "r3", "status": "rejected", "reason": "x"},
    ]
    text = [k for k, kind in STATE_SCHEMA.items() if kind == pl.String]
    default = "IF a > 1 THEN y *= 0.9 | x"
    frame = pl.DataFrame(
        [{k: row.get(k, default) if k in text else None for k in STATE_SCHEMA} for row in rows],
        schema=STATE_SCHEMA,
    )
    html = RENDERER.render(state_table(frame).value)
    assert_no_markup(html)
    # activations and retirements only, five columns each
    assert html.count("<tr>") == 3 and html.count("<td>") == 2 * 5
    assert "<td>IF a &gt; 1 THEN y *= 0.9 | x</td>" in html


def test_the_rules_in_force_list_has_one_plain_item_per_rule() -> None:
    rules = [active("r1", definition=HOSTILE), active("r2")]
    html = RENDERER.render(in_force_markdown(rules))
    assert html.count("<li>") == 2 and html.count("<strong>") == 2  # only the rule ids
    assert_no_markup(html.replace("<strong>r1</strong>", "").replace("<strong>r2</strong>", ""))
    assert in_force_markdown([]) == "No rule is in force."
