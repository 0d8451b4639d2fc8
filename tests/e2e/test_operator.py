"""GET /metrics, GET /status, the page at `/`, the per-request log line and X-Request-ID."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import eventually, user
from tests.servers import ServerThread, service_settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, **headers: str) -> Samples:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = httpx.get(f"{base_url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def settled(before: Samples, after: Samples, **labels: str) -> Samples | None:
    """`after` once it counts a request with these labels that `before` did not."""
    return after if moved(before, after, "bingapi_requests_total", **labels) else None


def test_metrics_move_with_real_requests(base_url: str, emulator: BingEmulator) -> None:
    before = scrape(base_url)
    preflight = {"origin": "http://ui.example", "access-control-request-method": "POST"}
    assert httpx.options(f"{base_url}/v1/chat/completions", headers=preflight).status_code == 200
    with openai_client(base_url) as client:
        list(client.chat.completions.create(model="precise", messages=user("hi"), stream=True))
        client.chat.completions.create(model="gpt-4", messages=user("hi"))  # an alias of creative
        emulator.faults.chat = "drop"
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="precise", messages=user("hi"), stream=True))
        emulator.faults.chat = "throttled"
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="balanced", messages=user("hi"))
    # Counted as each response ends, which may be just after the client has read it.
    after = eventually(lambda: settled(before, scrape(base_url), model="balanced", status="429"))
    assert moved(before, after, "bingapi_requests_total", model="precise", status="200") == 2
    assert moved(before, after, "bingapi_requests_total", model="creative", status="200") == 1
    assert moved(before, after, "bingapi_requests_total", model="balanced", status="429") == 1
    assert moved(before, after, "bingapi_time_to_first_token_seconds_count", model="precise") == 2
    assert moved(before, after, "bingapi_time_to_first_token_seconds_count", model="creative") == 1
    assert moved(before, after, "bingapi_request_duration_seconds_count", model="balanced") == 1
    assert moved(before, after, "bingapi_request_duration_seconds_sum", model="precise") > 0
    assert moved(before, after, "bingapi_upstream_errors_total", kind="rate_limit_exceeded") == 1
    assert moved(before, after, "bingapi_upstream_errors_total", kind="upstream_stream_interrupted") == 1
    assert (
        moved(
            before, after, "bingapi_request_errors_total", code="upstream_stream_interrupted", where="in_band"
        )
        == 1
    )
    assert (
        moved(before, after, "bingapi_request_errors_total", code="rate_limit_exceeded", where="status") == 1
    )
    assert value(after, "bingapi_account_state", account="default", state="cooling_down") == 1
    assert value(after, "bingapi_account_state", account="default", state="healthy") == 0
    assert value(after, "bingapi_accounts_usable") == 0
    assert value(after, "bingapi_requests_in_progress") == 0
    assert not any(  # the CORS preflight is not a chat completion
        name == "bingapi_requests_total"
        and dict(labels)["model"] == "none"
        and after[name, labels] != before.get((name, labels), 0.0)
        for name, labels in after
    )


def test_open_upstream_sockets_are_counted_while_a_stream_runs(base_url: str) -> None:
    with openai_client(base_url) as client:
        stream = client.chat.completions.create(
            model="balanced", messages=user("emulate:words=80 emulate:delay=0.03 go slowly"), stream=True
        )
        next(iter(stream))
        during = scrape(base_url)
        assert value(during, "bingapi_upstream_open_sockets") >= 1
        assert value(during, "bingapi_requests_in_progress") >= 1
        assert value(during, "bingapi_account_in_flight", account="default") == 1
        list(stream)
    eventually(lambda: value(scrape(base_url), "bingapi_upstream_open_sockets") == 0)


def test_status_shows_states_and_recent_requests_without_secrets(
    base_url: str, emulator: BingEmulator
) -> None:
    with openai_client(base_url) as client:
        client.chat.completions.create(model="precise", messages=user("hi"))
        emulator.faults.chat = "captcha"
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="precise", messages=user("hi"))

    def answered() -> httpx.Response | None:
        response = httpx.get(f"{base_url}/status")
        latest = response.json()["recent"]["latest"]
        return response if latest and latest[0]["status"] == 503 else None

    response = eventually(answered)
    status = response.json()
    assert status["version"] == "0.1.0" and status["status"] == "degraded"
    assert status["auth"] == {"api_keys": False, "admin_view": False}
    [account] = status["accounts"]
    assert set(account) == {"name", "upstream", "state", "usable", "retry_at", "retry_in"}
    assert account["name"] == "default" and account["state"] == "needs_captcha"
    assert 890 <= account["retry_in"] <= 900
    recent = status["recent"]
    assert recent["by_error"]["upstream_captcha_required"] >= 1
    assert recent["latest"][0]["error"] == "upstream_captcha_required"
    assert recent["latest"][0]["status"] == 503 and recent["latest"][0]["account"] == "default"
    assert recent["latest"][1]["status"] == 200 and recent["latest"][1]["model"] == "precise"
    assert "TESTSECRET" not in response.text and "test-account-cookie" not in response.text


def test_page_is_html_for_browsers_and_json_for_clients(base_url: str) -> None:
    page = httpx.get(f"{base_url}/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(f"{base_url}{asset}").status_code == 200
    info = httpx.get(f"{base_url}/").json()
    assert info["base_url"] == f"{base_url}/v1" and info["docs"] == f"{base_url}/docs"
    assert httpx.get(f"{base_url}/docs").status_code == 200


def test_operator_views_follow_api_keys(emulator: BingEmulator) -> None:
    settings = service_settings(emulator, api_keys="sk-op-1,sk-op-2", admin_key="admin-op")
    with ServerThread(settings) as url:
        for path in ("/status", "/metrics"):
            denied = httpx.get(f"{url}{path}")
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
            for key in ("sk-op-2", "admin-op"):
                assert (
                    httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {key}"}).status_code == 200
                )
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/", headers={"accept": "text/html"}).status_code == 200


def request_line(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, Any]:
    """The one line logged for `request_id` (written as the response ends, so maybe just after)."""

    def lines() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "apis.requests" and r.fields["request_id"] == request_id
        ]

    found = eventually(lines)
    assert len(found) == 1, f"expected one line for {request_id}, got {len(found)}"
    assert found[0].getMessage().startswith(f"request request_id={request_id} ")
    fields: dict[str, Any] = found[0].fields
    return fields


def test_one_line_per_request_with_the_request_id_header(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apis.requests")
    body = {"model": "balanced", "messages": user("hi"), "stream": True}
    response = httpx.post(
        f"{base_url}/v1/chat/completions", json=body, headers={"x-request-id": "trace-42.a"}
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "trace-42.a"
    line = request_line(caplog, "trace-42.a")
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["model"] == "balanced" and line["stream"] is True and line["account"] == "default"
    assert line["status"] == 200 and line["error"] is None and line["attempts"] == 1
    assert 0 < line["ttft_ms"] <= line["total_ms"]
    assert line["bytes_in"] == len(response.request.content)
    assert line["bytes_out"] == len(response.content)
    with openai_client(base_url) as client:  # the official client reads the header too
        completion = client.chat.completions.create(model="precise", messages=user("hi"))
    assert re.fullmatch(r"[0-9a-f]{32}", completion._request_id or "")
    assert request_line(caplog, completion._request_id or "")["stream"] is False


def test_an_insane_request_id_is_replaced(base_url: str) -> None:
    for supplied in ("has spaces in it", "x" * 65, "../etc", "ü-unicode"):
        got = httpx.get(f"{base_url}/v1/models", headers={"x-request-id": supplied.encode()}).headers
        assert re.fullmatch(r"[0-9a-f]{32}", got["x-request-id"])


def test_error_lines_carry_the_code(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="apis.requests")
    body = {"model": "no-such-model", "messages": user("hi")}
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers={"x-request-id": "bad-model"})
    assert response.status_code == 404
    line = request_line(caplog, "bad-model")
    assert line["error"] == "model_not_found" and line["model"] is None and line["account"] is None


def test_the_line_names_the_account_the_turn_ran_on(
    emulator: BingEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(
        json.dumps(
            [
                {"name": "first", "cookies": "_U=first-cookie; emulate=captcha"},
                {"name": "second", "cookies": "_U=second-cookie"},
            ]
        )
    )
    settings = service_settings(
        emulator, bing_cookies="", bing_cookies_file=str(accounts), failover_attempts=3
    )
    caplog.set_level(logging.DEBUG, logger="apis.requests")
    with ServerThread(settings) as url:
        body = {"model": "creative", "messages": user("hi")}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"x-request-id": "failover-1"})
    assert response.status_code == 200
    line = request_line(caplog, "failover-1")
    assert line["account"] == "second" and line["attempts"] == 2 and line["error"] is None
