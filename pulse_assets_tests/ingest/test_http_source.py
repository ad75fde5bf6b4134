import time
from datetime import date

import polars as pl
import pytest

from pulse_assets.errors import SourceError
from pulse_assets.ingest import load_source
from pulse_assets_tests.http_server import Reply, scripted_server

PLUGIN = "pulse_assets.ingest.http_source:HttpJsonSource"


def record(day: str, value) -> dict:
    return {"timestamp": f"{day}T15:00:00Z", "entity": "iris-1", "price": value, "volume": 10}


def source(base_url: str, **params):
    defaults = {
        "base_url": base_url,
        "variables": ["price", "volume"],
        "token_env": "IRIS_TOKEN",
        "backoff_s": 0.01,
        "timeout_s": 2.0,
    }
    return load_source("iris", PLUGIN, defaults | params)


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("IRIS_TOKEN", "secret-token")


def test_pages_are_followed_and_the_token_is_sent():
    pages = [
        Reply(body={"data": [record("2016-01-04", 1.5)], "next_page_token": "p2"}),
        Reply(body={"data": [record("2016-01-05", 2.5)], "next_page_token": None}),
    ]
    with scripted_server(pages) as (url, script):
        frame = source(url).fetch(date(2016, 1, 4), date(2016, 1, 6))
    assert frame.get_column("date").to_list() == [date(2016, 1, 4), date(2016, 1, 5)]
    assert frame.get_column("price").to_list() == ["1.5", "2.5"]
    assert [r["query"].get("page_token") for r in script.requests] == [None, "p2"]
    assert script.requests[0]["query"] == {
        "start": "2016-01-04",
        "end": "2016-01-06",
        "variables": "price,volume",
    }
    assert all(r["authorization"] == "Bearer secret-token" for r in script.requests)
    assert all(r["path"] == "/series" for r in script.requests)


def test_a_5xx_is_retried_then_succeeds():
    replies = [
        Reply(status=500, body={"error": "boom"}),
        Reply(body={"data": [record("2016-01-04", 1.0)]}),
    ]
    with scripted_server(replies) as (url, script):
        frame = source(url).fetch(date(2016, 1, 4), date(2016, 1, 5))
    assert frame.height == 1
    assert len(script.requests) == 2


def test_persistent_5xx_gives_up_with_the_attempt_count():
    with scripted_server([Reply(status=503, body={})]) as (url, script):
        with pytest.raises(SourceError, match=r"gave up after 3 attempt\(s\), last: HTTP 503"):
            source(url, max_retries=2).fetch(date(2016, 1, 4), date(2016, 1, 5))
    assert len(script.requests) == 3


def test_a_hang_times_out_and_is_retried_within_bounds():
    with scripted_server([Reply(body={"data": []}, delay_s=3.0)]) as (url, script):
        started = time.perf_counter()
        with pytest.raises(SourceError, match=r"gave up after 2 attempt\(s\), last: ReadTimeout"):
            source(url, timeout_s=0.3, max_retries=1).fetch(date(2016, 1, 4), date(2016, 1, 5))
        assert time.perf_counter() - started < 2.5
    assert len(script.requests) == 2


TRICKLED = Reply(body={"data": [record("2016-01-04", 1.0)] * 20}, trickle_s=0.05)


def test_a_server_that_trickles_is_cut_at_the_request_deadline():
    # every read returns a byte well within timeout_s: only the request deadline can end it
    with scripted_server([TRICKLED]) as (url, script):
        started = time.perf_counter()
        with pytest.raises(
            SourceError,
            match=r"gave up after 2 attempt\(s\), last: the request passed its request_deadline_s",
        ):
            source(url, timeout_s=1.0, request_deadline_s=0.6, max_retries=1).fetch(
                date(2016, 1, 4), date(2016, 1, 5)
            )
        elapsed = time.perf_counter() - started
    assert len(script.requests) == 2
    assert elapsed < 2.5, f"two requests of 0.6 s took {elapsed:.1f} s"


def test_the_run_deadline_bounds_the_whole_fetch_with_its_retries():
    with scripted_server([TRICKLED]) as (url, script):
        started = time.perf_counter()
        with pytest.raises(SourceError, match=r"passed its run_deadline_s of 1 s"):
            source(url, request_deadline_s=0.7, run_deadline_s=1.0, max_retries=10).fetch(
                date(2016, 1, 4), date(2016, 1, 5)
            )
        elapsed = time.perf_counter() - started
    assert len(script.requests) == 2, "the run deadline, not max_retries, ended the fetch"
    assert elapsed < 2.5, f"a 1 s run deadline took {elapsed:.1f} s"


def test_an_answer_larger_than_the_limit_is_refused():
    big = Reply(body={"data": [record("2016-01-04", "9" * 4000)]})
    with scripted_server([big]) as (url, _):
        with pytest.raises(SourceError, match="larger than max_response_bytes=2048"):
            source(url, max_response_bytes=2048).fetch(date(2016, 1, 4), date(2016, 1, 5))


def test_malformed_json_is_an_error_naming_the_url():
    with scripted_server([Reply(raw=b"{not json")]) as (url, _):
        with pytest.raises(
            SourceError, match=r"source 'iris' at http://127\.0\.0\.1:\d+/series.*not valid JSON"
        ):
            source(url).fetch(date(2016, 1, 4), date(2016, 1, 5))


def test_payload_without_data_list_is_an_error():
    with scripted_server([Reply(body={"rows": []})]) as (url, _):
        with pytest.raises(SourceError, match="answer has no 'data' list"):
            source(url).fetch(date(2016, 1, 4), date(2016, 1, 5))


def test_401_fails_at_once_and_names_the_token_variable():
    with scripted_server([Reply(status=401, body={"error": "bad token"})]) as (url, script):
        with pytest.raises(SourceError, match="HTTP 401, the token was refused.*IRIS_TOKEN"):
            source(url).fetch(date(2016, 1, 4), date(2016, 1, 5))
    assert len(script.requests) == 1


def test_missing_token_variable_is_named(monkeypatch):
    monkeypatch.delenv("IRIS_TOKEN")
    with pytest.raises(SourceError, match="environment variable IRIS_TOKEN"):
        source("http://127.0.0.1:9").fetch(date(2016, 1, 4), date(2016, 1, 5))


def test_bad_values_reach_the_schema_check_as_text():
    with scripted_server([Reply(body={"data": [record("2016-01-04", "n/a")]})]) as (url, _):
        frame = source(url).fetch(date(2016, 1, 4), date(2016, 1, 5))
    assert frame.schema["price"] == pl.String
    assert frame.get_column("price").to_list() == ["n/a"]
