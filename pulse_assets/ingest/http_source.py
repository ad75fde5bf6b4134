"""An HTTP JSON time-series API, the plan's Iris plugin.

Contract: ``GET {base_url}/series?start=YYYY-MM-DD&end=YYYY-MM-DD&variables=a,b[&page_token=T]``
with ``Authorization: Bearer <token>`` answers
``{"data": [{"timestamp": ..., "entity": ..., "a": ..., "b": ...}], "next_page_token": T | null}``.
5xx answers, timeouts and dropped connections are retried with exponential backoff; any other
failure raises :class:`SourceError` at once, naming the URL and what was wrong.

I/O is bounded three ways: ``timeout_s`` bounds each network wait, ``request_deadline_s`` one
whole request (a server that trickles a byte a second cannot hold it), ``run_deadline_s`` the
whole fetch with its pages and retries; ``max_response_bytes`` bounds what one answer may send.
A deadline is checked between reads, and each read waits at most the time left, so a request
ends within its deadline plus one read.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date
from typing import Any

import httpx
import polars as pl
from pydantic import Field

from pulse_assets.config import TimeZoneName
from pulse_assets.errors import SourceError
from pulse_assets.ingest.base import Source, SourceParams


class HttpJsonParams(SourceParams):
    base_url: str = Field(pattern=r"^https?://")
    variables: list[str] = Field(min_length=1)
    token_env: str | None = Field(default=None, description="environment variable with the token")
    time_field: str = "timestamp"
    entity_field: str = "entity"
    time_zone: TimeZoneName = "UTC"
    timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    max_pages: int = Field(default=10_000, ge=1)
    request_deadline_s: float = Field(default=60.0, gt=0)
    run_deadline_s: float = Field(default=900.0, gt=0)
    max_response_bytes: int = Field(default=64 * 2**20, ge=1024)


class _Retryable(Exception):
    """A failure worth another try: a 5xx answer, a timeout or a dropped connection."""


class _Deadline:
    """A point in monotonic time, and the name of the setting that set it (for messages)."""

    def __init__(self, seconds: float, setting: str) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.setting = setting

    def left(self) -> float:
        return self.at - time.monotonic()

    def earliest(self, other: _Deadline) -> _Deadline:
        return self if self.at <= other.at else other


class HttpJsonSource(Source):
    Params = HttpJsonParams
    params: HttpJsonParams

    def location(self) -> str:
        return f"{self.params.base_url.rstrip('/')}/series"

    def _headers(self) -> dict[str, str]:
        env = self.params.token_env
        if env is None:
            return {}
        token = os.environ.get(env)
        if not token:
            raise SourceError(
                self.name,
                self.location(),
                f"environment variable {env} holding the token is not set",
                f"export {env}=<token> where Dagster runs",
            )
        return {"Authorization": f"Bearer {token}"}

    def _get_once(
        self, client: httpx.Client, query: dict[str, str], run_deadline: _Deadline
    ) -> dict[str, Any]:
        deadline = _Deadline(self.params.request_deadline_s, "request_deadline_s").earliest(
            run_deadline
        )
        wait = max(min(self.params.timeout_s, deadline.left()), 0.001)
        try:
            with client.stream("GET", self.location(), params=query, timeout=wait) as response:
                body = self._read_body(response, deadline, run_deadline)
        except (httpx.TimeoutException, httpx.TransportError) as error:
            self._raise_if_run_is_over(run_deadline, str(error))
            raise _Retryable(f"{type(error).__name__}: {error}") from error
        return self._payload(response, body)

    def _read_body(
        self, response: httpx.Response, deadline: _Deadline, run_deadline: _Deadline
    ) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.params.max_response_bytes:
                raise SourceError(
                    self.name,
                    str(response.url),
                    f"the answer is larger than max_response_bytes={self.params.max_response_bytes}",
                    "ask for a shorter range or fewer variables per page, or raise the limit",
                )
            if deadline.left() <= 0:
                read = f"{size} byte(s) read in {deadline.seconds:g} s"
                self._raise_if_run_is_over(run_deadline, read)
                raise _Retryable(f"the request passed its {deadline.setting} ({read})")
        return b"".join(chunks)

    def _raise_if_run_is_over(self, run_deadline: _Deadline, last: str) -> None:
        if run_deadline.left() <= 0:
            raise SourceError(
                self.name,
                self.location(),
                f"the fetch passed its run_deadline_s of {run_deadline.seconds:g} s (last: {last})",
                "the server is too slow; raise run_deadline_s or ingest a shorter range",
            )

    def _payload(self, response: httpx.Response, body: bytes) -> dict[str, Any]:
        text = body[:200].decode(errors="replace")
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {text}")
        if response.status_code in (401, 403):
            raise SourceError(
                self.name,
                str(response.url),
                f"HTTP {response.status_code}, the token was refused",
                f"check the token in {self.params.token_env or 'the token_env variable'}",
            )
        if response.status_code != 200:
            raise SourceError(
                self.name,
                str(response.url),
                f"HTTP {response.status_code}: {text}",
                "check base_url and variables in configs/",
            )
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise SourceError(
                self.name,
                str(response.url),
                f"answer is not valid JSON ({error})",
                "check that base_url points at the series API",
            ) from error
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise SourceError(
                self.name,
                str(response.url),
                "answer has no 'data' list",
                "check that base_url points at the series API",
            )
        return payload

    def _get(
        self, client: httpx.Client, query: dict[str, str], run_deadline: _Deadline
    ) -> dict[str, Any]:
        attempts = self.params.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._get_once(client, query, run_deadline)
            except _Retryable as error:
                backoff = self.params.backoff_s * 2**attempt
                if attempt == attempts - 1 or backoff >= run_deadline.left():
                    raise SourceError(
                        self.name,
                        self.location(),
                        f"gave up after {attempt + 1} attempt(s), last: {error}",
                        "the server may be down or too slow; re-run the partition when it is back",
                    ) from error
                time.sleep(backoff)
        raise AssertionError("unreachable: the loop returns or raises")

    def _records(self, start: date, end: date) -> list[dict[str, Any]]:
        query = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "variables": ",".join(self.params.variables),
        }
        records: list[dict[str, Any]] = []
        run_deadline = _Deadline(self.params.run_deadline_s, "run_deadline_s")
        with httpx.Client(headers=self._headers()) as client:
            for _ in range(self.params.max_pages):
                payload = self._get(client, query, run_deadline)
                records.extend(payload["data"])
                token = payload.get("next_page_token")
                if not token:
                    return records
                query = {**query, "page_token": str(token)}
        raise SourceError(
            self.name,
            self.location(),
            f"more than {self.params.max_pages} pages",
            "raise max_pages or ingest a shorter range",
        )

    def fetch(self, start: date, end: date) -> pl.DataFrame:
        params = self.params
        records = self._records(start, end)
        bad = next((i for i, record in enumerate(records) if not isinstance(record, dict)), None)
        if bad is not None:
            raise SourceError(
                self.name,
                self.location(),
                f"record {bad} is not a JSON object: {records[bad]!r:.100}",
                "check that base_url points at the series API",
            )
        fields = [params.time_field, params.entity_field, *params.variables]
        columns = {field: [_text(record.get(field)) for record in records] for field in fields}
        frame = pl.DataFrame(columns, schema=dict.fromkeys(fields, pl.String))
        day = (
            pl.col(params.time_field)
            .str.to_datetime(time_zone=params.time_zone, strict=False)
            .dt.date()
        )
        return frame.select(
            day.alias("date"),
            pl.col(params.entity_field).alias("entity"),
            *[pl.col(variable) for variable in params.variables],
        )


def _text(value: Any) -> str | None:
    """Values travel as text to the schema check, which types them and quarantines misfits."""
    return None if value is None else str(value)
