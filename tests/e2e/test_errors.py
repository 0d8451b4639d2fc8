"""Every failure reaches the official client with the right status, type and code (PROTOCOL.md §8)."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest
from openai import OpenAI

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import user
from tests.servers import ServerThread, service_settings


def call(client: OpenAI, text: str = "hi", *, stream: bool = False, model: str = "balanced") -> None:
    result = client.chat.completions.create(model=model, messages=user(text), stream=stream)
    if stream:
        list(result)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("throttled", 429, "rate_limit_exceeded"),
        ("captcha", 503, "upstream_captcha_required"),
        ("unauthorized", 502, "upstream_auth_failed"),
        ("forbidden", 503, "upstream_account_blocked"),
        ("internal_error", 502, "upstream_bad_response"),
        ("close7_start", 502, "upstream_closed"),
        ("stall_start", 504, "upstream_timeout"),
        ("apology_start", 200, None),
    ],
)
def test_chat_failures_before_text_get_real_statuses(
    client: OpenAI, emulator: BingEmulator, fault: str, status: int, code: str | None, stream: bool
) -> None:
    emulator.faults.chat = fault
    if status == 200:  # a filtered answer is an answer: content_filter, not an error
        result = client.chat.completions.create(model="balanced", messages=user("hi"))
        assert result.choices[0].finish_reason == "content_filter"
        return
    with pytest.raises(openai.APIStatusError) as caught:
        call(client, stream=stream)
    assert caught.value.status_code == status
    assert caught.value.code == code
    assert caught.value.type in ("server_error", "requests")
    assert "_U=" not in caught.value.message and "TESTSECRET" not in caught.value.message


def test_throttled_says_when_to_retry(client: OpenAI, emulator: BingEmulator) -> None:
    emulator.faults.chat = "throttled"
    with pytest.raises(openai.RateLimitError) as caught:
        call(client)
    assert caught.value.response.headers["retry-after"] == "3600"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_captcha_tells_how_to_fix_it(client: OpenAI, emulator: BingEmulator) -> None:
    emulator.faults.chat = "captcha"
    with pytest.raises(openai.InternalServerError) as caught:
        call(client)
    assert "captcha" in caught.value.message.lower()
    assert caught.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("unauthorized", 502, "upstream_auth_failed"),
        ("http401", 502, "upstream_auth_failed"),
        ("forbidden", 503, "upstream_account_blocked"),
        ("internal", 502, "upstream_bad_response"),
        ("html", 502, "upstream_region_blocked"),
        ("redirect_cn", 502, "upstream_region_blocked"),
        ("http404", 429, "rate_limit_exceeded"),
        ("http500", 502, "upstream_bad_response"),
        ("missing_signature", 502, "upstream_bad_response"),
        ("missing_ids", 502, "upstream_bad_response"),
        ("empty", 502, "upstream_bad_response"),
        ("slow", 504, "upstream_timeout"),
    ],
)
def test_create_failures(client: OpenAI, emulator: BingEmulator, fault: str, status: int, code: str) -> None:
    emulator.faults.create = fault
    emulator.faults.slow_seconds = 3
    with pytest.raises(openai.APIStatusError) as caught:
        call(client, stream=True)
    assert (caught.value.status_code, caught.value.code) == (status, code)


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "upstream_auth_failed"), (403, "upstream_auth_failed"), (500, "upstream_bad_response")],
)
def test_websocket_upgrade_refused(client: OpenAI, emulator: BingEmulator, status: int, code: str) -> None:
    emulator.faults.upgrade = status
    with pytest.raises(openai.APIStatusError) as caught:
        call(client)
    assert (caught.value.status_code, caught.value.code) == (502, code)


def test_unreachable_upstream_is_502(emulator: BingEmulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    settings = service_settings(
        emulator,
        bing_create_url=f"http://127.0.0.1:{dead_port}/turing/conversation/create",
    )
    with (
        ServerThread(settings) as url,
        openai_client(url) as client,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        call(client)
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_unreachable")


def test_turn_limit_twice_is_a_502(client: OpenAI, emulator: BingEmulator) -> None:
    emulator.faults.chat = "turn_limit"
    with pytest.raises(openai.InternalServerError) as caught:
        call(client)
    assert caught.value.code == "upstream_bad_response"


def test_the_official_client_retries_transient_upstream_errors(base_url: str, emulator: BingEmulator) -> None:
    emulator.faults.chat, emulator.faults.times = "internal_error", 1
    with openai_client(base_url, max_retries=2) as client:
        completion = client.chat.completions.create(model="balanced", messages=user("hi"))
    assert completion.choices[0].finish_reason == "stop"


class TestCallerErrors:
    def test_unknown_model_is_404(self, client: OpenAI) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            call(client, model="gpt-9")
        assert caught.value.code == "model_not_found" and caught.value.param == "model"

    def test_context_too_long_is_400(self, client: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            call(client, "x" * 4001)
        assert caught.value.code == "context_length_exceeded"

    def test_several_choices_refused(self, client: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="balanced", messages=user("hi"), n=2)
        assert caught.value.param == "n"

    def test_forced_tool_call_refused(self, client: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="balanced",
                messages=user("hi"),
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                tool_choice="required",
            )
        assert caught.value.param == "tool_choice"

    def test_empty_messages_is_400(self, client: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="balanced", messages=[])
        assert caught.value.param == "messages"

    def test_audio_input_is_a_clear_400(self, client: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="balanced",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
                    }
                ],
            )
        assert caught.value.code == "unsupported_content"


class TestApiKeys:
    @pytest.fixture(scope="class")
    def keyed_url(self, emulator: BingEmulator):  # type: ignore[no-untyped-def]
        with ServerThread(service_settings(emulator, api_keys="sk-good,sk-other")) as url:
            yield url

    def test_wrong_key_is_401(self, keyed_url: str) -> None:
        with (
            openai_client(keyed_url, api_key="sk-bad") as client,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            call(client)
        assert caught.value.code == "invalid_api_key"
        assert "sk-bad" not in caught.value.message

    def test_missing_key_is_401_envelope(self, keyed_url: str) -> None:
        body = {"model": "balanced", "messages": user("hi")}
        response = httpx.post(f"{keyed_url}/v1/chat/completions", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"

    def test_azure_style_header_works(self, keyed_url: str) -> None:
        body = {"model": "balanced", "messages": user("hi")}
        response = httpx.post(f"{keyed_url}/v1/chat/completions", json=body, headers={"api-key": "sk-good"})
        assert response.status_code == 200

    def test_models_also_need_the_key(self, keyed_url: str) -> None:
        with openai_client(keyed_url, api_key="sk-bad") as client, pytest.raises(openai.AuthenticationError):
            client.models.list()

    def test_right_key_passes(self, keyed_url: str) -> None:
        with openai_client(keyed_url, api_key="sk-other") as client:
            assert client.chat.completions.create(model="balanced", messages=user("hi")).choices
