"""Rule text and LLM prose reach the Dagster markdown metadata escaped: rendered by a real
CommonMark renderer (with tables), they stay literal text in their own cell or list item."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markdown_it import MarkdownIt

from pulse_assets.defs.metadata import escape_markdown
from pulse_assets.defs.rules import active_rules_markdown, records_table
from pulse_assets.rules.repository import RuleRecord

HOSTILE = (
    "calm | markets\n| injected | row |\n|---|---|\n<img src=x onerror=alert(1)> "
    "<script>alert(2)</script> `code` [click](javascript:alert(3)) ![i](http://x/i.png) "
    "**bold** _em_ ~~gone~~ # heading \\| &amp;"
)
RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def record(rule_id: str, **changes: Any) -> RuleRecord:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    fields: dict[str, Any] = {
        "rule_id": rule_id,
        "version": 1,
        "name": "n",
        "description": "d",
        "definition": "IF a > 1 THEN y *= 0.9",
        "fingerprint": "f",
        "label": "y",
        "source": "llm",
        "status": "active",
        "confidence": "low",
        "impact": None,
        "explanation": "e",
        "details": {},
        "changes": {},
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }
    return RuleRecord(**(fields | changes))


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


def test_a_records_table_keeps_its_shape_with_hostile_cells() -> None:
    records = [
        record("r1", definition="IF a > 1 THEN y *= 0.9 | x", explanation=HOSTILE),
        record("r2", status="draft", confidence="high", definition=HOSTILE),
    ]
    columns = ("rule_id", "status", "definition", "explanation")
    html = RENDERER.render(records_table(records, columns).value)
    assert_no_markup(html)
    assert html.count("<tr>") == 3 and html.count("<td>") == 2 * len(columns)
    assert "<td>IF a &gt; 1 THEN y *= 0.9 | x</td>" in html


def test_the_active_rules_list_has_one_plain_item_per_rule() -> None:
    records = [record("r1", explanation=HOSTILE), record("r2", description=HOSTILE)]
    html = RENDERER.render(active_rules_markdown(records))
    assert html.count("<li>") == 2 and html.count("<strong>") == 2  # only the rule ids
    assert_no_markup(html.replace("<strong>r1</strong>", "").replace("<strong>r2</strong>", ""))
    assert active_rules_markdown([]).startswith("No rule is active")
