"""The rule language: parsing, errors with positions, normalization, vectorized application."""

from datetime import date

import polars as pl
import pytest

from pulse_assets.rules.language import RuleSyntaxError, UnknownNameError, apply_rules, parse

FEATURES = ["vol_20d_z", "tweet_count_z", "polls_margin"]
LABELS = ["sp500_abs_return_next"]


def test_the_issue_examples_parse():
    rule = parse(
        "IF vol_20d_z > 2 AND tweet_count_z > 1 THEN sp500_abs_return_next *= 1.15",
        FEATURES,
        LABELS,
    )
    assert rule.adjustment.op == "*=" and rule.adjustment.value.value == 1.15
    assert rule.features() == {"vol_20d_z", "tweet_count_z"} and rule.sign() == 1
    assert parse("IF vol_20d_z > 2 THEN sp500_abs_return_next += 0.002").sign() == 1
    assert parse("IF vol_20d_z > 2 THEN sp500_abs_return_next -= 0.002").sign() == -1


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("IF a > 2 AND b > 1 THEN y *= 1.15", "if (b > 1.0) and 2 < a then y *= 1.150"),
        (
            "IF a > 2 OR (b > 1 OR c < 0) THEN y += 1",
            "IF c < 0 OR a > 2 OR b > 1 OR a > 2 THEN y += 1",
        ),
        ("IF NOT NOT a >= 1 THEN y -= 2", "IF a >= 1 THEN y -= 2e0"),
    ],
)
def test_the_same_rule_written_two_ways_has_one_fingerprint(one, two):
    assert parse(one).fingerprint == parse(two).fingerprint


def test_different_rules_have_different_fingerprints():
    assert (
        parse("IF a > 2 THEN y *= 1.1").fingerprint != parse("IF a >= 2 THEN y *= 1.1").fingerprint
    )
    assert (
        parse("IF a > 2 THEN y *= 1.1").fingerprint != parse("IF a > 2 THEN y += 1.1").fingerprint
    )


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        (
            "IF a > THEN y += 1",
            7,
            "expected a number, a feature name, a function or '(', found 'THEN'",
        ),
        ("IF a > 1 y += 1", 9, "expected THEN or AND/OR, found 'y'"),
        ("IF a > 1 THEN y ** 2", 16, "expected *=, += or -=, found '*'"),
        ("IF a > 1 THEN y += 1 extra", 21, "expected end of rule, found 'extra'"),
        ("IF __import__('os') THEN y *= 2", 14, 'unexpected character "\'"'),
        ("IF exec(a) > 1 THEN y *= 2", 3, "unknown function 'exec'"),
        ("IF clip(a, 1) > 1 THEN y *= 2", 3, "clip takes 3 arguments, got 2"),
        ("IF a.b > 1 THEN y *= 2", 4, "unexpected character '.'"),
        ("IF a > 1 THEN y *= 2; DROP TABLE rules", 20, "unexpected character ';'"),
    ],
)
def test_syntax_errors_name_the_position_and_token(text, position, problem):
    with pytest.raises(RuleSyntaxError) as error:
        parse(text)
    assert error.value.position == position
    assert f"rule syntax error at position {position}: {problem}" in str(error.value)


def test_unknown_feature_and_label_are_named():
    with pytest.raises(UnknownNameError, match=r"unknown feature\(s\) \['nope'\]"):
        parse("IF nope > 1 THEN sp500_abs_return_next *= 2", FEATURES, LABELS)
    with pytest.raises(UnknownNameError, match="unknown label 'vol_20d_z'"):
        parse("IF polls_margin > 1 THEN vol_20d_z *= 2", FEATURES, LABELS)


def test_rules_apply_vectorized_with_functions_and_nulls():
    frame = pl.DataFrame(
        {
            "date": [date(2016, 1, d) for d in range(4, 8)],
            "a": [3.0, -3.0, None, 0.5],
            "b": [1.0, 1.0, 1.0, 9.0],
            "forecast_y": [1.0, 1.0, 1.0, 1.0],
        }
    )
    rules = [
        parse("IF abs(a) > 2 AND NOT b > 5 THEN y *= 2"),
        parse("IF clip(b, 0, 4) * max(a, 0) >= 2 THEN y += 0.5"),
    ]
    out = apply_rules(frame, rules)
    assert out["adjusted_y"].to_list() == [2.5, 2.0, 1.0, 1.5]  # a null feature never fires a rule


def test_overlong_rules_are_refused():
    with pytest.raises(RuleSyntaxError, match="4010 characters, longer than the limit of 2000"):
        parse("IF " + " AND ".join(["a > 1"] * 400) + " THEN y *= 2")
