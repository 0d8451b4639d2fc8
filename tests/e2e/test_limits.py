"""MAX_BODY_BYTES (413) and RATE_LIMIT_PER_MINUTE (this service's own 429) on a real server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import openai
import pytest

from apis.limits import RateLimiter
from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import user
from tests.servers import ServerThread, service_settings

CAP = 4096
ORIGIN = {"Origin": "https://chat.example"}


@pytest.fixture(scope="module")
def limited(emulator: BingEmulator) -> Iterator[str]:
    settings = service_settings(
        emulator, max_body_bytes=CAP, rate_limit_per_minute=3, api_keys="key-one,key-two"
    )
    with ServerThread(settings) as url:
        yield url


@pytest.fixture(scope="module")
def open_service(emulator: BingEmulator) -> Iterator[str]:
    with ServerThread(service_settings(emulator, rate_limit_per_minute=2)) as url:
        yield url


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **ORIGIN}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert response.headers["access-control-allow-origin"] == "*"
    return error  # type: ignore[no-any-return]


def test_declared_body_over_the_cap_gets_413_before_it_is_read(limited: str) -> None:
    body = {"model": "balanced", "messages": user("x" * CAP)}
    response = httpx.post(f"{limited}/v1/chat/completions", json=body, headers=auth("key-one"))
    error = assert_envelope(response, 413, "request_too_large")
    assert error["type"] == "invalid_request_error"
    assert "MAX_BODY_BYTES" in str(error["message"])


def test_chunked_body_over_the_cap_gets_413(limited: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "balanced", "messages": [{"role": "user", "content": "'
        for _ in range(64):
            yield b"y" * 1024  # far past the cap; the server stops reading early
        yield b'"}]}'

    response = httpx.post(
        f"{limited}/chat/completions",
        content=chunks(),
        headers={"Content-Type": "application/json", **auth("key-two")},
    )
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "request_too_large")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a refusal, not a failure


def test_body_under_the_cap_is_served(limited: str, emulator: BingEmulator) -> None:
    with openai_client(limited, api_key="key-two") as client:
        completion = client.chat.completions.create(model="balanced", messages=user("hello " * 100))
    assert completion.choices[0].finish_reason == "stop"


def test_rate_limit_is_per_key_and_says_it_is_ours(limited: str) -> None:
    url = f"{limited}/v1/chat/completions"
    # Invalid bodies are cheap and count: the limit is on requests, not on answers.
    for _ in range(3):
        assert httpx.post(url, json={}, headers=auth("key-one")).status_code == 400
    response = httpx.post(url, json={}, headers=auth("key-one"))
    error = assert_envelope(response, 429, "rate_limit_exceeded")
    assert error["type"] == "requests"
    assert "this proxy service" in str(error["message"]) and "not Bing" in str(error["message"])
    assert 1 <= int(response.headers["retry-after"]) <= 20
    assert "key-one" not in response.text
    # The other key has its own bucket; a wrong key is refused by auth, not counted; models stay free.
    assert httpx.post(url, json={}, headers=auth("key-two")).status_code == 400
    assert httpx.post(url, json={}, headers=auth("wrong")).status_code == 401
    for _ in range(5):
        assert httpx.get(f"{limited}/v1/models", headers=auth("key-one")).status_code == 200


def test_openai_client_sees_a_rate_limit_error(open_service: str) -> None:
    with openai_client(open_service) as client:
        for _ in range(2):
            client.chat.completions.create(model="balanced", messages=user("hi"))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="balanced", messages=user("hi"))
    assert "not Bing's quota" in caught.value.message
    assert "client address" in caught.value.message


def test_bucket_refills_and_idle_buckets_are_dropped() -> None:
    now = [0.0]
    limiter = RateLimiter(60, max_buckets=3, clock=lambda: now[0])
    assert all(limiter.take(b"a") is None for _ in range(60))
    wait = limiter.take(b"a")
    assert wait is not None and 0.9 < wait <= 1.0
    now[0] += 1.0
    assert limiter.take(b"a") is None  # one token back after a second
    for caller in (b"b", b"c", b"d"):
        limiter.take(caller)
    assert list(limiter.buckets) == [b"b", b"c", b"d"]  # bounded: the least recently seen went
    now[0] += 61.0
    limiter.take(b"e")
    assert list(limiter.buckets) == [b"e"]  # idle buckets were full again, so dropped
