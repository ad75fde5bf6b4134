"""The rule language: ``IF <condition> THEN <label> *= | += | -= <expression>``.

Parsed by a whitelist recursive-descent parser into a typed tree; nothing is ever evaluated
as Python. Conditions use feature names, numbers, comparisons, AND/OR/NOT, + - * /, and the
functions abs, min, max, clip. A syntax error names the position and the offending token;
an unknown feature or label is named. Rules apply as polars expressions, never row by row.

The fingerprint is a hash of the normalized tree: keywords in any case, redundant
parentheses, operand order of AND/OR, ``2 < x`` versus ``x > 2`` and ``2`` versus ``2.0``
all give the same fingerprint.

Every accepted rule round-trips: ``parse(rule.canonical())`` gives the rule with its
condition normalized, and the same canonical text and fingerprint. The limits below make
that a promise: numbers are finite and read back exactly, and a rule's tree, nesting and
canonical text are bounded, so the recursive parser and every tree walk stay far from
Python's recursion limit and the canonical text of an accepted rule is itself accepted.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import polars as pl

from pulse_assets.errors import PulseError


class RuleSyntaxError(PulseError):
    """Rule text that is not in the language: the message names the position and the problem."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.position = position
        pointer = f"{text}\n{' ' * position}^"
        super().__init__(f"rule syntax error at position {position}: {problem}\n{pointer}")


class RuleLimitError(RuleSyntaxError):
    """Grammatical text over a limit: a number out of range, too long, or nested too deep.

    Never a reason to try another reading of the text, so the parser's backtracking lets it
    through unchanged."""


class UnknownNameError(PulseError):
    """A rule names a feature or label that the feature table does not have."""


class InvalidNumberError(PulseError):
    """A rule tree was built in code with a number that is not finite."""


KEYWORDS = {"IF", "THEN", "AND", "OR", "NOT"}
FUNCTIONS = {"abs": (1, 1), "min": (2, 8), "max": (2, 8), "clip": (3, 3)}
COMPARATORS = {">", ">=", "<", "<=", "==", "!="}
MIRRORED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
ASSIGNMENTS = {"*=", "+=", "-="}
TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>>=|<=|==|!=|\*=|\+=|-=|[-+*/<>(),]))"
)
MAX_RULE_LENGTH = 2_000
"""Characters in a rule's text, and in its canonical text (the form that is stored)."""
MAX_DEPTH = 32
"""Levels in a rule's tree: a chain ``a + b + c`` is three levels deep (two ``+`` nodes over
the leaves), ``NOT``, ``-``, a function call and a comparison each add one. Every tree walk
(normalization, canonical text, polars expressions) recurses at most this deep."""
MAX_NESTING = 2 * MAX_DEPTH
"""Parentheses, unary minus signs, ``NOT`` and function calls open at one point of the text.
It bounds the parser's recursion (a few frames per level). The canonical text nests at most
two levels per tree level (``-(x)``, ``NOT (c)``), so it always fits within this limit."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise InvalidNumberError(
                f"rule number {self.value!r} is not finite: a rule's numbers must be finite so "
                "that its canonical text reads back; use a finite value"
            )


@dataclass(frozen=True)
class Feature:
    name: str


@dataclass(frozen=True)
class Negate:
    operand: Expr


@dataclass(frozen=True)
class Arithmetic:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]


Expr = Number | Feature | Negate | Arithmetic | Call


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logical:
    op: str  # AND | OR
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    operand: Condition


Condition = Compare | Logical | Not
Node = Expr | Condition
_N = TypeVar("_N", bound=Node)


@dataclass(frozen=True)
class Adjustment:
    label: str
    op: str
    value: Expr


@dataclass(frozen=True)
class Rule:
    condition: Condition
    adjustment: Adjustment

    def canonical(self) -> str:
        """The normalized text: ``parse(rule.canonical()).canonical() == rule.canonical()``."""
        return self._canonical_text

    @cached_property
    def _canonical_text(self) -> str:
        adjustment = self.adjustment
        return (
            f"IF {_canonical(normalize(self.condition))} THEN {adjustment.label} "
            f"{adjustment.op} {_canonical(adjustment.value)}"
        )

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def features(self) -> set[str]:
        return set(_names(self.condition)) | set(_names(self.adjustment.value))

    def sign(self) -> int:
        """+1 when the rule raises the forecast, -1 when it lowers it, 0 when it depends."""
        value = self.adjustment.value
        if not isinstance(value, Number):
            return 0
        if self.adjustment.op == "*=":
            return (value.value > 1) - (value.value < 1)
        direction = (value.value > 0) - (value.value < 0)
        return direction if self.adjustment.op == "+=" else -direction


# --- parsing ---------------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    stripped_end = len(text.rstrip())
    while position < stripped_end:
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            start = position + (len(text[position:]) - len(text[position:].lstrip()))
            raise RuleSyntaxError(text, start, f"unexpected character {text[start]!r}")
        kind = match.lastgroup or "op"
        start = match.start(kind)
        word = match.group(kind)
        if kind == "name" and word.upper() in KEYWORDS:
            kind, word = "keyword", word.upper()
        tokens.append(Token(kind, word, start))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent over the tokens, with MAX_NESTING and MAX_DEPTH enforced as it goes:
    ``nesting`` counts the groups open at the current token, ``depths`` holds the tree depth
    of every node built so far (by ``id``; a node is registered before any parent looks it up)."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_RULE_LENGTH:
            raise RuleLimitError(
                text[:80],
                0,
                f"rule is {len(text)} characters, longer than the limit of {MAX_RULE_LENGTH}; "
                "split it into simpler rules",
            )
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0
        self.depths: dict[int, int] = {}

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def fail(self, expected: str) -> RuleSyntaxError:
        token = self.current
        found = "end of rule" if token.kind == "end" else repr(token.text)
        return RuleSyntaxError(self.text, token.position, f"expected {expected}, found {found}")

    def take(self, kind: str, text: str | None = None) -> Token | None:
        token = self.current
        if token.kind == kind and (text is None or token.text == text):
            self.index += 1
            return token
        return None

    def expect(self, kind: str, text: str, expected: str) -> Token:
        token = self.take(kind, text)
        if token is None:
            raise self.fail(expected)
        return token

    def enter(self, token: Token) -> None:
        """One more group open at ``token``; callers leave it in a ``finally``."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise RuleLimitError(
                self.text,
                token.position,
                f"more than {MAX_NESTING} parentheses, minus signs, NOT or function calls "
                "open at once; remove redundant ones or split the rule",
            )

    def build(self, node: _N, children: Iterable[Node], token: Token) -> _N:
        """``node`` with its depth recorded; deeper than MAX_DEPTH is refused at ``token``."""
        depth = 1
        for child in children:
            depth = max(depth, self.depths[id(child)] + 1)
        if depth > MAX_DEPTH:
            raise RuleLimitError(
                self.text,
                token.position,
                f"the rule's tree is deeper than {MAX_DEPTH} levels (long chains of operators "
                "or deep nesting); split it into simpler rules",
            )
        self.depths[id(node)] = depth
        return node

    def number(self, token: Token) -> Number:
        """A literal that reads back exactly: finite, and not a nonzero number rounded to 0."""
        value = float(token.text)
        if not math.isfinite(value):
            raise RuleLimitError(
                self.text,
                token.position,
                f"number {token.text} is too large: it overflows to infinity; numbers must "
                f"lie within ±{sys.float_info.max:.6g}, write a smaller one",
            )
        if value == 0 and re.search("[1-9]", token.text.lower().split("e")[0]):
            raise RuleLimitError(
                self.text,
                token.position,
                f"number {token.text} is too small: it underflows to 0; nonzero numbers must "
                "be at least 5e-324 in size, write 0 if zero is meant",
            )
        return self.build(Number(value + 0.0), (), token)

    def rule(self) -> Rule:
        self.expect("keyword", "IF", "IF")
        condition = self.condition()
        self.expect("keyword", "THEN", "THEN or AND/OR")
        label = self.take("name")
        if label is None:
            raise self.fail("a label name after THEN")
        op = (
            self.current.text
            if self.current.kind == "op" and self.current.text in ASSIGNMENTS
            else None
        )
        if op is None:
            raise self.fail("*=, += or -=")
        self.index += 1
        value = self.arithmetic()
        if self.current.kind != "end":
            raise self.fail("end of rule")
        return Rule(condition, Adjustment(label.text, op, value))

    def condition(self) -> Condition:
        start = self.current
        operands = [self.conjunction()]
        while self.take("keyword", "OR"):
            operands.append(self.conjunction())
        if len(operands) == 1:
            return operands[0]
        return self.build(Logical("OR", tuple(operands)), operands, start)

    def conjunction(self) -> Condition:
        start = self.current
        operands = [self.negation()]
        while self.take("keyword", "AND"):
            operands.append(self.negation())
        if len(operands) == 1:
            return operands[0]
        return self.build(Logical("AND", tuple(operands)), operands, start)

    def negation(self) -> Condition:
        token = self.current
        if self.take("keyword", "NOT"):
            self.enter(token)
            try:
                operand = self.negation()
            finally:
                self.nesting -= 1
            return self.build(Not(operand), (operand,), token)
        if token.kind == "op" and token.text == "(":
            grouped = self.grouped_condition()
            if grouped is not None:
                return grouped
        return self.comparison()

    def grouped_condition(self) -> Condition | None:
        """``( condition )`` when the parenthesis opens one; None (nothing taken) when it opens
        an arithmetic expression instead, as in ``(a + b) > 2``."""
        saved = self.index
        self.enter(self.current)
        self.index += 1
        try:
            inner = self.condition()
            if self.take("op", ")"):
                return inner
        except RuleLimitError:
            raise
        except RuleSyntaxError:
            pass
        finally:
            self.nesting -= 1
        self.index = saved
        return None

    def comparison(self) -> Compare:
        left = self.arithmetic()
        token = self.current
        if not (token.kind == "op" and token.text in COMPARATORS):
            raise self.fail("a comparison (>, >=, <, <=, ==, !=)")
        self.index += 1
        right = self.arithmetic()
        return self.build(Compare(token.text, left, right), (left, right), token)

    def arithmetic(self) -> Expr:
        node = self.term()
        while (
            self.current.kind == "op"
            and self.current.text in "+-"
            and self.current.text not in ASSIGNMENTS
        ):
            token = self.current
            self.index += 1
            right = self.term()
            node = self.build(Arithmetic(token.text, node, right), (node, right), token)
        return node

    def term(self) -> Expr:
        node = self.unary()
        while self.current.kind == "op" and self.current.text in ("*", "/"):
            token = self.current
            self.index += 1
            right = self.unary()
            node = self.build(Arithmetic(token.text, node, right), (node, right), token)
        return node

    def unary(self) -> Expr:
        token = self.current
        if not self.take("op", "-"):
            return self.primary()
        self.enter(token)
        try:
            operand = self.unary()
        finally:
            self.nesting -= 1
        if isinstance(operand, Number):
            return self.build(Number(-operand.value + 0.0), (), token)
        return self.build(Negate(operand), (operand,), token)

    def primary(self) -> Expr:
        token = self.current
        if self.take("number"):
            return self.number(token)
        if self.take("op", "("):
            self.enter(token)
            try:
                inner = self.arithmetic()
                self.expect("op", ")", "')'")
            finally:
                self.nesting -= 1
            return inner
        if token.kind == "name":
            self.index += 1
            if self.take("op", "("):
                self.enter(token)
                try:
                    return self.call(token)
                finally:
                    self.nesting -= 1
            return self.build(Feature(token.text), (), token)
        raise self.fail("a number, a feature name, a function or '('")

    def call(self, name: Token) -> Call:
        if name.text not in FUNCTIONS:
            raise RuleSyntaxError(
                self.text,
                name.position,
                f"unknown function {name.text!r}; allowed: {', '.join(sorted(FUNCTIONS))}",
            )
        args = [self.arithmetic()]
        while self.take("op", ","):
            args.append(self.arithmetic())
        self.expect("op", ")", "',' or ')'")
        low, high = FUNCTIONS[name.text]
        if not low <= len(args) <= high:
            raise RuleSyntaxError(
                self.text,
                name.position,
                f"{name.text} takes {low}{'' if low == high else f'..{high}'} arguments, got {len(args)}",
            )
        return self.build(Call(name.text, tuple(args)), args, name)


def parse(
    text: str, features: Iterable[str] | None = None, labels: Iterable[str] | None = None
) -> Rule:
    """Parse ``text``; with ``features``/``labels`` given, every name must be one of them.

    A rule whose canonical text would be longer than MAX_RULE_LENGTH is refused too (the
    canonical text adds parentheses and spaces), so that what is stored always reads back."""
    rule = _Parser(text).rule()
    canonical = rule.canonical()
    if len(canonical) > MAX_RULE_LENGTH:
        raise RuleLimitError(
            text[:80],
            0,
            f"the rule's canonical text (with every operation parenthesized) is "
            f"{len(canonical)} characters, over the limit of {MAX_RULE_LENGTH}; "
            "split it into simpler rules",
        )
    if features is not None:
        known = set(features)
        unknown = sorted(rule.features() - known)
        if unknown:
            raise UnknownNameError(
                f"rule names unknown feature(s) {unknown}; valid features are the "
                f"columns of features/daily_features ({len(known)} of them)"
            )
    if labels is not None and rule.adjustment.label not in set(labels):
        raise UnknownNameError(
            f"rule adjusts unknown label {rule.adjustment.label!r}; valid labels: {sorted(labels)}"
        )
    return rule


# --- normalization ---------------------------------------------------------------------------


def normalize(condition: Condition) -> Condition:
    if isinstance(condition, Not):
        inner = normalize(condition.operand)
        return inner.operand if isinstance(inner, Not) else Not(inner)
    if isinstance(condition, Compare):
        if isinstance(condition.left, Number) and not isinstance(condition.right, Number):
            return Compare(MIRRORED[condition.op], condition.right, condition.left)
        return condition
    flat: dict[str, Condition] = {}
    for operand in condition.operands:
        operand = normalize(operand)
        parts = (
            operand.operands
            if isinstance(operand, Logical) and operand.op == condition.op
            else (operand,)
        )
        for part in parts:
            flat.setdefault(_canonical(part), part)
    ordered = tuple(flat[key] for key in sorted(flat))
    return ordered[0] if len(ordered) == 1 else Logical(condition.op, ordered)


def _number(value: float) -> str:
    """Text that reads back as exactly ``value``: the 12-significant-digit form when that is
    exact and no longer (the form fingerprints have always been computed from, so they stay
    stable), else the shortest exact form, ``repr``: ``0.30000000000000004``, ``1e-320``."""
    value += 0.0  # -0.0 is written as 0: both compare equal in every rule
    short, exact = format(value, ".12g"), repr(value)
    return short if float(short) == value and len(short) <= len(exact) else exact


def _canonical(node: Node) -> str:
    if isinstance(node, Number):
        return _number(node.value)
    if isinstance(node, Feature):
        return node.name
    if isinstance(node, Negate):
        return f"-({_canonical(node.operand)})"
    if isinstance(node, Arithmetic):
        return f"({_canonical(node.left)} {node.op} {_canonical(node.right)})"
    if isinstance(node, Call):
        return f"{node.function}({', '.join(_canonical(a) for a in node.args)})"
    if isinstance(node, Compare):
        return f"{_canonical(node.left)} {node.op} {_canonical(node.right)}"
    if isinstance(node, Not):
        return f"NOT ({_canonical(node.operand)})"
    return f" {node.op} ".join(f"({_canonical(o)})" for o in node.operands)


def _names(node: Node) -> Iterable[str]:
    if isinstance(node, Feature):
        yield node.name
    elif isinstance(node, Negate | Not):
        yield from _names(node.operand)
    elif isinstance(node, Arithmetic | Compare):
        yield from _names(node.left)
        yield from _names(node.right)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from _names(arg)
    elif isinstance(node, Logical):
        for operand in node.operands:
            yield from _names(operand)


# --- polars ----------------------------------------------------------------------------------


def to_expr(node: Node) -> pl.Expr:
    if isinstance(node, Number):
        return pl.lit(node.value, dtype=pl.Float64)
    if isinstance(node, Feature):
        return pl.col(node.name).cast(pl.Float64)
    if isinstance(node, Negate):
        return -to_expr(node.operand)
    if isinstance(node, Arithmetic):
        left, right = to_expr(node.left), to_expr(node.right)
        return {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[node.op]
    if isinstance(node, Call):
        args = [to_expr(a) for a in node.args]
        if node.function == "abs":
            return args[0].abs()
        if node.function == "min":
            return pl.min_horizontal(args)
        if node.function == "max":
            return pl.max_horizontal(args)
        return pl.min_horizontal(pl.max_horizontal(args[0], args[1]), args[2])
    if isinstance(node, Compare):
        # NaN compares as missing: polars orders NaN above every number, so ``x > 2`` would
        # fire on a NaN; as null, the comparison does not fire (like a missing value)
        left, right = to_expr(node.left).fill_nan(None), to_expr(node.right).fill_nan(None)
        return {
            ">": left > right,
            ">=": left >= right,
            "<": left < right,
            "<=": left <= right,
            "==": left == right,
            "!=": left != right,
        }[node.op]
    if isinstance(node, Not):
        return ~to_expr(node.operand)
    combined = [to_expr(o) for o in node.operands]
    return pl.all_horizontal(combined) if node.op == "AND" else pl.any_horizontal(combined)


def condition_expr(rule: Rule) -> pl.Expr:
    """True where the rule's condition holds; a comparison with a missing or NaN value is
    false, so the rule does not fire there."""
    return to_expr(rule.condition).fill_null(False)


def _changed(rule: Rule, forecast: pl.Expr) -> pl.Expr:
    value = to_expr(rule.adjustment.value)
    return {"*=": forecast * value, "+=": forecast + value, "-=": forecast - value}[
        rule.adjustment.op
    ]


def fired_expr(rule: Rule, forecast: pl.Expr) -> pl.Expr:
    """True where the rule changes ``forecast``: its condition holds and the adjusted value is
    finite. Where the adjustment gives NaN or inf (``x / 0``, an overflow) the rule does not
    fire and the forecast passes unchanged: the same in evaluation and in application."""
    return (condition_expr(rule) & _changed(rule, forecast).is_finite()).fill_null(False)


def adjusted_expr(rule: Rule, forecast: pl.Expr) -> pl.Expr:
    """``forecast`` with the rule applied where it fires (see ``fired_expr``)."""
    return pl.when(fired_expr(rule, forecast)).then(_changed(rule, forecast)).otherwise(forecast)


def apply_rules(
    frame: pl.DataFrame,
    rules: list[Rule],
    forecast_prefix: str = "forecast_",
    adjusted_prefix: str = "adjusted_",
) -> pl.DataFrame:
    """Add ``adjusted_<label>``: each label's forecast with its rules applied in order."""
    labels = sorted(
        {c[len(forecast_prefix) :] for c in frame.columns if c.startswith(forecast_prefix)}
    )
    expressions = []
    for label in labels:
        adjusted = pl.col(forecast_prefix + label)
        for rule in rules:
            if rule.adjustment.label == label:
                adjusted = adjusted_expr(rule, adjusted)
        expressions.append(adjusted.alias(adjusted_prefix + label))
    return frame.with_columns(expressions)
