"""Alerts: one JSON POST to a webhook (Slack-compatible ``text`` plus the figures).

The URL comes only from the environment (``PULSE_ALERT_WEBHOOK_URL``), never from config
files, and never appears in what is logged (the error_log redacts it). A failed delivery is
returned, not raised: the failure handler records it in the error_log and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from pulse_assets.reliability.failures import qualified_name


@dataclass(frozen=True)
class Delivery:
    ok: bool
    detail: str  # "HTTP 200", or why it was not delivered (may hold the URL: redact it)


def post_json(url: str, payload: Mapping[str, Any], timeout_s: float) -> Delivery:
    """POST ``payload`` as JSON; any answer but 2xx, a timeout or a transport error is a
    failed delivery. Redirects are not followed (a webhook that moved is a failure)."""
    try:
        response = httpx.post(url, json=dict(payload), timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        return Delivery(False, f"{qualified_name(type(error))}: {error}")
    if response.is_success:
        return Delivery(True, f"HTTP {response.status_code}")
    return Delivery(False, f"HTTP {response.status_code}: {response.text[:200]}")
