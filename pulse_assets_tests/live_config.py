"""Settings for live-operation tests: HTTP JSON sources (``pulse_assets.ingest.http_source``)
on loopback servers the tests start, live days, and every store under a temporary folder."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from pulse_assets_tests.conftest import small_config

HTTP_PLUGIN = "pulse_assets.ingest.http_source:HttpJsonSource"


def http_source(base_url: str, schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    """One HTTP JSON source, a single request per run (no retry inside the run: the freshness
    sensor's attempts are what the tests count)."""
    source: dict[str, Any] = {
        "plugin": HTTP_PLUGIN,
        "params": {
            "base_url": base_url,
            "variables": ["price", "volume"],
            "max_retries": 0,
            "timeout_s": 5.0,
        },
        "schema": {
            "columns": {"price": {"type": "float", "gt": 0}, "volume": {"type": "int", "ge": 0}}
        },
    }
    if schedule is not None:
        source["schedule"] = schedule
    return source


def day_payload(day: str, price: float = 101.5) -> dict[str, Any]:
    """What the HTTP source's server answers for ``day``: one row."""
    return {
        "data": [
            {"timestamp": f"{day}T15:00:00Z", "entity": "iris-1", "price": price, "volume": 7}
        ],
        "next_page_token": None,
    }


START, ROUNDS_START = date(2024, 1, 1), date(2024, 2, 1)


def live_config(
    tmp: Path, sources: Mapping[str, dict[str, Any]], end: date | None, **overrides: Any
) -> dict[str, Any]:
    """small_config with ``sources`` (the first is the features' spine and the label's
    source), daily partitions from 2024-01-01 to ``end`` (exclusive; None: today) in UTC,
    and ``overrides`` (top-level keys)."""
    raw = small_config(tmp)
    spine = next(iter(sources))
    raw["sources"] = dict(sources)
    raw["partitions"] = {"start": START.isoformat(), "end": end.isoformat() if end else None}
    raw["rounds"] = raw["rounds"] | {"start": ROUNDS_START.isoformat()}
    raw["features"] = raw["features"] | {
        "spine": spine,
        "inputs": {
            name: {"prefix": f"p{i}", "columns": ["price"], "max_staleness_days": 5}
            for i, name in enumerate(sources)
        },
        "steps": [
            {"type": "fillna"},
            {
                "type": "calculate_indicators",
                "params": {
                    "indicators": [
                        {"kind": "log_return", "column": "p0_price", "name": "p0_return"}
                    ]
                },
            },
        ],
        "labels": [
            {
                "name": "p0_abs_return_next",
                "source": spine,
                "column": "price",
                "kind": "abs_log_return_next",
            }
        ],
    }
    raw["training"] = raw["training"] | {"labels": ["p0_abs_return_next"]}
    raw.update(overrides)
    return raw
