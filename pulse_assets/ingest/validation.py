"""Schema check: types, required values, ranges, uniqueness. Bad rows go to quarantine with why."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pulse_assets.config import ColumnSpec, SourceSchema
from pulse_assets.errors import SchemaError

POLARS_TYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "str": pl.String(),
    "bool": pl.Boolean(),
}
REASON_COLUMN = "quarantine_reason"


@dataclass(frozen=True)
class ValidatedFrame:
    """The rows that passed, and the ones that did not with the reason per row (as strings)."""

    good: pl.DataFrame
    quarantined: pl.DataFrame

    @property
    def quarantined_share(self) -> float:
        total = self.good.height + self.quarantined.height
        return self.quarantined.height / total if total else 0.0


def output_schema(schema: SourceSchema) -> dict[str, pl.DataType]:
    columns: dict[str, pl.DataType] = {"date": pl.Date(), "entity": pl.String()}
    columns.update({name: POLARS_TYPES[spec.type] for name, spec in schema.columns.items()})
    return columns


# Below 2**53 every integer is exact as a float64, so "9616100.0" reads as 9616100 exactly; above
# it a float text may stand for several integers and is refused.
_EXACT_FLOAT_INTEGER = 2.0**53


def _typed(name: str, kind: str) -> pl.Expr:
    """Column ``name`` cast to ``kind``; null where the text is not a value of that type.

    An ``int`` column also takes integer-valued floats ("9616100.0", as spreadsheets write
    counts), but not "1.5" and not floats too large to be exact.
    """
    direct = pl.col(name).cast(POLARS_TYPES[kind], strict=False)
    if kind != "int":
        return direct
    as_float = pl.col(name).cast(pl.Float64, strict=False)
    integral = (as_float.abs() < _EXACT_FLOAT_INTEGER) & (as_float == as_float.floor())
    return direct.fill_null(pl.when(integral).then(as_float).cast(pl.Int64, strict=False))


def _range_problems(name: str, spec: ColumnSpec) -> list[tuple[pl.Expr, str]]:
    column = pl.col(name)
    problems = []
    if spec.gt is not None:
        problems.append((column <= spec.gt, f"{name} must be > {spec.gt}"))
    if spec.ge is not None:
        problems.append((column < spec.ge, f"{name} must be >= {spec.ge}"))
    if spec.lt is not None:
        problems.append((column >= spec.lt, f"{name} must be < {spec.lt}"))
    if spec.le is not None:
        problems.append((column > spec.le, f"{name} must be <= {spec.le}"))
    return problems


def _problem_checks(schema: SourceSchema) -> list[tuple[pl.Expr, pl.Expr]]:
    """(row is bad, reason) pairs; the reason is an expression so it can quote the bad value."""
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (pl.col("date").is_null(), pl.lit("date is missing or not a date")),
        (pl.col("entity").is_null(), pl.lit("entity is missing")),
    ]
    for name, spec in schema.columns.items():
        typed = pl.col(name)
        original = pl.col(f"__raw_{name}")
        checks.append(
            (
                typed.is_null() & original.is_not_null(),
                pl.format(f"{name}={{}} is not a {spec.type}", original.cast(pl.String)),
            )
        )
        if spec.required:
            checks.append((original.is_null(), pl.lit(f"{name} is missing")))
        if spec.type == "float":
            checks.append(
                (typed.is_nan() | typed.is_infinite(), pl.lit(f"{name} is NaN or infinite"))
            )
        for violated, reason in _range_problems(name, spec):
            checks.append(
                (violated.fill_null(False), pl.format(f"{reason}, got {{}}", typed.cast(pl.String)))
            )
    return checks


def validate(frame: pl.DataFrame, schema: SourceSchema, source: str) -> ValidatedFrame:
    """Split ``frame`` into rows that satisfy ``schema`` and quarantined rows with the reason.

    A missing column is not a row problem: it raises :class:`SchemaError` naming the column.
    An exact duplicate row is one observation sent twice: one copy is kept. Rows that share a
    key but differ in a value are all quarantined: no copy can be trusted over another.
    """
    missing = [c for c in output_schema(schema) if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"source {source!r}: column(s) {missing} missing from the data "
            f"(found {frame.columns}); fix the source or its column mapping in configs/"
        )
    columns = list(output_schema(schema))
    distinct = frame.select(columns).unique(maintain_order=True)
    raw_copies = [pl.col(name).alias(f"__raw_{name}") for name in schema.columns]
    typed = distinct.with_columns(raw_copies).with_columns(
        _typed(name, spec.type) for name, spec in schema.columns.items()
    )
    typed = typed.with_columns(
        pl.col("date").cast(pl.Date, strict=False), pl.col("entity").cast(pl.String)
    )
    checks = _problem_checks(schema)
    duplicated = pl.len().over(schema.unique) > 1
    checks.append(
        (
            duplicated & pl.all_horizontal(pl.col(c).is_not_null() for c in schema.unique),
            pl.lit(f"duplicate ({', '.join(schema.unique)})"),
        )
    )
    reasons = pl.concat_str(
        [pl.when(bad).then(reason) for bad, reason in checks], separator="; ", ignore_nulls=True
    )
    marked = typed.with_columns(
        pl.when(reasons.str.len_chars() > 0).then(reasons).alias(REASON_COLUMN)
    )
    good = marked.filter(pl.col(REASON_COLUMN).is_null()).select(columns).sort(["date", "entity"])
    raw_columns = [pl.col(f"__raw_{name}").cast(pl.String).alias(name) for name in schema.columns]
    quarantined = marked.filter(pl.col(REASON_COLUMN).is_not_null()).select(
        pl.col("date"), pl.col("entity"), *raw_columns, pl.col(REASON_COLUMN)
    )
    return ValidatedFrame(good=good, quarantined=quarantined)
