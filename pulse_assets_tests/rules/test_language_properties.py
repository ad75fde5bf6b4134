"""Property-based tests of the rule language: every accepted rule round-trips through its
canonical text; numbers out of range and nesting past the limits are refused with a
RuleSyntaxError that names the position, never a RecursionError or a silent change."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pulse_assets.errors import PulseError
from pulse_assets.rules.language import (
    MAX_DEPTH,
    MAX_NESTING,
    MAX_RULE_LENGTH,
    Compare,
    InvalidNumberError,
    Number,
    RuleLimitError,
    RuleSyntaxError,
    UnknownNameError,
    normalize,
    parse,
)

NAMES = st.sampled_from(["a", "b", "vol_20d_z", "x1", "inf", "nan", "e1", "NaN_2"])
FINITE = st.floats(allow_nan=False, allow_infinity=False)
EXACT_TEXT = st.sampled_from([repr, lambda v: f"{v:.17g}", lambda v: f"{v:.17e}"])
SPECIAL = st.sampled_from(
    [
        "1e-320",
        "5e-324",
        "4.9406564584124654e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "1e308",
        "0.1",
        "0.30000000000000004",
        "123456789012345678901234567890",
        "0",
        "0.0",
        "0e-999",
        ".5",
        "7.",
        "1E+5",
        "100000000000",
        "1e12",
    ]
)


@st.composite
def literals(draw: st.DrawFn) -> str:
    """A finite number written so that it reads back exactly (tiny, huge, subnormal)."""
    if draw(st.booleans()):
        return draw(SPECIAL)
    return draw(EXACT_TEXT)(draw(FINITE))


def _binary(parts: tuple[str, str, str, bool]) -> str:
    left, op, right, grouped = parts
    return f"({left} {op} {right})" if grouped else f"{left} {op} {right}"


def _call(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    function, count = draw(
        st.sampled_from([("abs", 1), ("min", 2), ("max", 3), ("clip", 3), ("min", 8)])
    )
    return f"{function}({', '.join(draw(inner) for _ in range(count))})"


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        st.one_of(literals(), NAMES),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from("+-*/"), inner, st.booleans()).map(_binary),
            inner.map(lambda e: f"-{e}" if not e.startswith("-") else f"- {e}"),
            inner.map(lambda e: f"({e})"),
            st.composite(lambda draw: _call(draw, inner))(),
        ),
        max_leaves=8,
    )


KEYWORD_CASES = {k: st.sampled_from([k, k.lower(), k.title()]) for k in ("IF", "THEN", "AND")}


def conditions() -> st.SearchStrategy[str]:
    comparison = st.tuples(
        expressions(), st.sampled_from([">", ">=", "<", "<=", "==", "!="]), expressions()
    ).map(" ".join)
    return st.recursive(
        comparison,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["AND", "and", "OR", "or", "Or"]), inner).map(
                " ".join
            ),
            inner.map(lambda c: f"NOT {c}"),
            inner.map(lambda c: f"({c})"),
        ),
        max_leaves=6,
    )


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    return " ".join(
        [
            draw(KEYWORD_CASES["IF"]),
            draw(conditions()),
            draw(KEYWORD_CASES["THEN"]),
            draw(st.sampled_from(["y", "sp500_abs_return_next"])),
            draw(st.sampled_from(["*=", "+=", "-="])),
            draw(expressions()),
        ]
    )


def assert_round_trips(text: str) -> None:
    """parse -> canonical -> parse: the same rule (condition normalized), text and fingerprint."""
    rule = parse(text)
    canonical = rule.canonical()
    again = parse(canonical)
    assert again.canonical() == canonical
    assert again.fingerprint == rule.fingerprint
    assert again.adjustment == rule.adjustment
    assert again.condition == normalize(rule.condition)
    assert parse(again.canonical()) == again


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_texts())
def test_every_accepted_rule_round_trips(text: str) -> None:
    try:
        parse(text)
    except RuleLimitError:
        assume(False)  # a generated rule over a limit: refused plainly, which is tested below
    assert_round_trips(text)


@settings(max_examples=400, deadline=None)
@given(literals(), st.booleans())
def test_literals_read_back_exactly(text: str, negative: bool) -> None:
    written = f"-{text}" if negative else text
    rule = parse(f"IF a > {written} THEN y *= {written}")
    expected = (-float(text) if negative else float(text)) + 0.0
    assert isinstance(rule.condition, Compare) and isinstance(rule.condition.right, Number)
    assert rule.condition.right.value == expected
    again = parse(rule.canonical())
    assert isinstance(again.condition, Compare)
    for number in (again.condition.right, again.adjustment.value):
        assert isinstance(number, Number) and number.value == expected  # exact: floats compare


def test_subnormal_and_extreme_literals_keep_their_shortest_exact_form() -> None:
    for text in ("1e-320", "5e-324", "2.2250738585072014e-308", "1.7976931348623157e+308"):
        rule = parse(f"IF a > {text} THEN y *= 2")
        assert rule.canonical() == f"IF a > {text} THEN y *= 2"
    # 12 significant digits stay the canonical form, so stored fingerprints do not change
    assert parse("IF a > 1e12 THEN y *= 1.15").canonical() == "IF a > 1e+12 THEN y *= 1.15"
    assert parse("IF a > 0.1 + 0.2 THEN y *= 1").canonical() == "IF a > (0.1 + 0.2) THEN y *= 1"
    assert (
        parse("IF a > 0.30000000000000004 THEN y *= 1").canonical()
        == "IF a > 0.30000000000000004 THEN y *= 1"
    )
    assert parse("IF a > -0.0 THEN y *= 1").fingerprint == parse("IF a > 0 THEN y *= 1").fingerprint


@pytest.mark.parametrize(
    ("text", "fingerprint"),
    [  # computed by the language before numbers were written exactly: they must not change
        (
            "IF vol_20d_z > 2 AND tweet_count_z > 1 THEN sp500_abs_return_next *= 1.15",
            "66260affeb9dc59d",
        ),
        ("IF a >= -0.0123457 AND b < 3.5e-05 THEN y -= 0.000412", "dcaca0fc25ff6113"),
        (
            "IF NOT (abs(a - b) > 1e12) OR clip(c, -1, 1) * 2 != 0.5 THEN y += -(a / 3)",
            "628eb794c6dcc0c3",
        ),
    ],
)
def test_stored_fingerprints_are_stable(text: str, fingerprint: str) -> None:
    assert parse(text).fingerprint == fingerprint


OVERFLOWING = st.one_of(
    st.tuples(st.integers(1, 9), st.integers(309, 10**6)).map(lambda p: f"{p[0]}e{p[1]}"),
    st.sampled_from(["1.7976931348623159e308", "1e309", "9" * 400, "1E+400", "0.1e310"]),
)
UNDERFLOWING = st.tuples(st.integers(1, 9), st.integers(400, 10**6)).map(
    lambda p: f"{p[0]}.5e-{p[1]}"
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(OVERFLOWING, UNDERFLOWING), rule_texts(), st.booleans())
def test_numbers_that_do_not_read_back_are_refused_where_they_stand(
    literal: str, text: str, in_condition: bool
) -> None:
    head, tail = text.split(" ", 1)
    placed = f"{head} ((a > {literal})) OR {tail}" if in_condition else f"{text} + {literal}"
    assume(len(placed) <= MAX_RULE_LENGTH)
    with pytest.raises(RuleSyntaxError) as error:
        parse(placed)
    if isinstance(error.value, RuleLimitError) and (
        "too large" in str(error.value) or "too small" in str(error.value)
    ):
        assert placed[error.value.position :].startswith(literal)
        assert ("write a smaller one" in str(error.value)) or ("write 0" in str(error.value))
    else:  # the generated rule was refused earlier for its own limits
        assert isinstance(error.value, RuleLimitError)


def test_the_inf_literal_can_never_be_stored() -> None:
    with pytest.raises(RuleLimitError, match=r"position 7: number 1e309 is too large"):
        parse("IF a > 1e309 THEN y *= 2")
    with pytest.raises(RuleLimitError, match=r"number 1e-400 is too small: it underflows to 0"):
        parse("IF a > 1e-400 THEN y *= 2")
    with pytest.raises(InvalidNumberError, match="not finite"):
        Number(float("inf"))
    with pytest.raises(InvalidNumberError, match="not finite"):
        Number(float("nan"))


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("IF " + "(" * 250 + "a > 1" + ")" * 250 + " THEN y *= 2", 67, "more than 64"),
        ("IF " + "(" * 250 + "a" + ")" * 250 + " > 1 THEN y *= 2", 67, "more than 64"),
        ("IF " + "-" * 1000 + "a > 1 THEN y *= 2", 67, "more than 64"),
        ("IF a > 1 THEN y *= " + "-" * 1000 + "2", 83, "more than 64"),
        ("IF " + "NOT " * 400 + "a > 1 THEN y *= 2", 3 + 64 * 4, "more than 64"),
        ("IF " + "abs(" * 100 + "a" + ")" * 100 + " > 1 THEN y *= 2", 3 + 64 * 4, "more than 64"),
        (
            "IF a > 1 THEN y += " + " + ".join(["a"] * 40),
            19 + 31 * 4 + 2,
            "the rule's tree is deeper than 32",
        ),
        (
            "IF a > " + " * ".join(["2"] * 40) + " THEN y += 1",
            7 + 31 * 4 + 2,
            "the rule's tree is deeper than 32",
        ),
    ],
)
def test_deep_nesting_is_a_syntax_error_not_a_recursion_error(
    text: str, position: int, problem: str
) -> None:
    with pytest.raises(RuleLimitError) as error:
        parse(text)
    assert isinstance(error.value, PulseError) and error.value.position == position
    assert f"rule syntax error at position {position}: {problem}" in str(error.value)
    assert "split" in str(error.value) or "remove" in str(error.value)


def test_rules_at_the_limits_are_accepted_and_round_trip() -> None:
    deepest_negation = "IF " + "-" * (MAX_DEPTH - 2) + "a > 1 THEN y *= 2"
    deepest_not = "IF " + "NOT " * (MAX_DEPTH - 2) + "a > 1 THEN y *= 2"
    most_parentheses = "IF " + "(" * MAX_NESTING + "a > 1" + ")" * MAX_NESTING + " THEN y *= 2"
    longest_chain = "IF a > 1 THEN y += " + " + ".join(["a"] * (MAX_DEPTH - 1))
    for text in (deepest_negation, deepest_not, most_parentheses, longest_chain):
        assert_round_trips(text)


def test_a_canonical_text_over_the_length_limit_is_refused() -> None:
    text = "IF " + " AND ".join(f"a>{n}" for n in range(100, 290)) + " THEN y *= 2"
    assert len(text) <= MAX_RULE_LENGTH
    with pytest.raises(RuleLimitError, match="canonical text .* over the limit of 2000"):
        parse(text)


TOKENS = st.sampled_from(
    ["IF", "THEN", "AND", "OR", "NOT", "(", ")", "-", "+", "*", "/", ">", "<=", "==", "!="]
    + ["*=", "+=", "-=", ",", "a", "b", "y", "abs", "min", "clip", "1", "2.5", "1e309"]
    + ["1e-320", "1e-999", ".", "'", "0x1"]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(TOKENS, max_size=60), st.sampled_from([" ", ""]))
def test_any_token_soup_is_either_refused_plainly_or_round_trips(
    tokens: list[str], joiner: str
) -> None:
    text = joiner.join(tokens)
    try:
        parse(text)
    except (RuleSyntaxError, UnknownNameError):
        return
    assert_round_trips(text)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["(", "-", "NOT ", "abs(", "-("]), min_size=1, max_size=150),
    st.booleans(),
)
def test_deep_prefixes_are_refused_or_round_trip_never_recursion_errors(
    prefix: list[str], in_value: bool
) -> None:
    opened = "".join(prefix)
    closing = "".join(")" * p.count("(") for p in reversed(prefix))
    body = f"{opened}a{closing}"
    text = f"IF a > 1 THEN y *= {body}" if in_value else f"IF {body} > 1 THEN y *= 2"
    try:
        parse(text)
    except RuleSyntaxError:
        return
    assert_round_trips(text)
