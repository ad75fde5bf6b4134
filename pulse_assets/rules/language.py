"""The rule language: ``IF <condition> THEN <label> *= | += | -= <expression>``.

Parsed by a whitelist recursive-descent parser into a typed tree; nothing is ever evaluated
as Python. Conditions use feature names, numbers, comparisons, AND/OR/NOT, + - * /, and the
functions abs, min, max, clip. A syntax error names the position and the offending token;
an unknown feature or label is named. Rules apply as polars expressions, never row by row.

The fingerprint is a hash of the normalized tree: keywords in any case, redundant
parentheses, operand order of AND/OR, ``2 < x`` versus ``x > 2`` and ``2`` versus ``2.0``
all give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from pulse_assets.errors import PulseError


class RuleSyntaxError(PulseError):
    def __init__(self, text: str, position: int, problem: str) -> None:
        self.position = position
        pointer = f"{text}\n{' ' * position}^"
        super().__init__(f"rule syntax error at position {position}: {problem}\n{pointer}")


class UnknownNameError(PulseError):
    """A rule names a feature or label that the feature table does not have."""


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


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float


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
        return f"IF {_canonical(normalize(self.condition))} THEN {self.adjustment.label} {self.adjustment.op} {_canonical(self.adjustment.value)}"

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
    def __init__(self, text: str) -> None:
        if len(text) > MAX_RULE_LENGTH:
            raise RuleSyntaxError(text[:80], 0, f"rule longer than {MAX_RULE_LENGTH} characters")
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

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
        operands = [self.conjunction()]
        while self.take("keyword", "OR"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Logical("OR", tuple(operands))

    def conjunction(self) -> Condition:
        operands = [self.negation()]
        while self.take("keyword", "AND"):
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else Logical("AND", tuple(operands))

    def negation(self) -> Condition:
        if self.take("keyword", "NOT"):
            return Not(self.negation())
        if self.current.kind == "op" and self.current.text == "(":
            saved = self.index
            self.index += 1
            try:
                inner = self.condition()
                if self.take("op", ")"):
                    return inner
            except RuleSyntaxError:
                pass
            self.index = saved
        return self.comparison()

    def comparison(self) -> Compare:
        left = self.arithmetic()
        token = self.current
        if not (token.kind == "op" and token.text in COMPARATORS):
            raise self.fail("a comparison (>, >=, <, <=, ==, !=)")
        self.index += 1
        return Compare(token.text, left, self.arithmetic())

    def arithmetic(self) -> Expr:
        node = self.term()
        while (
            self.current.kind == "op"
            and self.current.text in "+-"
            and self.current.text not in ASSIGNMENTS
        ):
            op = self.current.text
            self.index += 1
            node = Arithmetic(op, node, self.term())
        return node

    def term(self) -> Expr:
        node = self.unary()
        while self.current.kind == "op" and self.current.text in ("*", "/"):
            op = self.current.text
            self.index += 1
            node = Arithmetic(op, node, self.unary())
        return node

    def unary(self) -> Expr:
        if self.take("op", "-"):
            operand = self.unary()
            return Number(-operand.value) if isinstance(operand, Number) else Negate(operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.current
        if self.take("number"):
            return Number(float(token.text))
        if self.take("op", "("):
            inner = self.arithmetic()
            self.expect("op", ")", "')'")
            return inner
        if token.kind == "name":
            self.index += 1
            if self.take("op", "("):
                return self.call(token)
            return Feature(token.text)
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
        return Call(name.text, tuple(args))


def parse(
    text: str, features: Iterable[str] | None = None, labels: Iterable[str] | None = None
) -> Rule:
    """Parse ``text``; with ``features``/``labels`` given, every name must be one of them."""
    rule = _Parser(text).rule()
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
    return format(value, ".12g")


def _canonical(node: Condition | Expr) -> str:
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


def _names(node: Condition | Expr) -> Iterable[str]:
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


def to_expr(node: Condition | Expr) -> pl.Expr:
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
        left, right = to_expr(node.left), to_expr(node.right)
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
    """True where the rule fires; a null comparison (missing feature value) does not fire."""
    return to_expr(rule.condition).fill_null(False)


def adjusted_expr(rule: Rule, forecast: pl.Expr) -> pl.Expr:
    value = to_expr(rule.adjustment.value)
    changed = {"*=": forecast * value, "+=": forecast + value, "-=": forecast - value}[
        rule.adjustment.op
    ]
    return pl.when(condition_expr(rule)).then(changed).otherwise(forecast)


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
