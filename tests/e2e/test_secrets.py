"""Cookies, API keys and prompts stay out of logs, error bodies and the API docs."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import user
from tests.servers import ServerThread, service_settings
from utils.logging import JsonFormatter, TextFormatter

SECRETS = ("test-account-cookie", "TESTSECRET", "sk-very-secret-key", "admin-very-secret")
PROMPT = "my private medical question 7731"


def test_no_secret_or_prompt_in_logs_errors_or_docs(
    emulator: BingEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = service_settings(emulator, api_keys="sk-very-secret-key", admin_key="admin-very-secret")
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    with ServerThread(settings) as url:
        with openai_client(url, api_key="sk-very-secret-key") as client:
            client.chat.completions.create(model="balanced", messages=user(PROMPT))
            for fault in ("throttled", "captcha", "unauthorized"):
                emulator.faults.chat = fault
                with pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(model="balanced", messages=user(PROMPT))
                bodies.append(caught.value.response.text)
            emulator.faults.clear()
        with (
            openai_client(url, api_key="sk-wrong") as bad,
            pytest.raises(openai.AuthenticationError) as denied,
        ):
            bad.models.list()
        bodies.append(denied.value.response.text)
        bodies.append(httpx.get(f"{url}/openapi.json").text)
        bodies.append(httpx.get(f"{url}/health").text)
        operator = {"authorization": "Bearer sk-very-secret-key"}
        for view in ("/status", "/metrics"):
            bodies.append(httpx.get(f"{url}{view}", headers=operator).text)
    # websockets.server is the emulator, playing Bing: it may see the cookies it is sent.
    records = [r for r in caplog.records if not r.name.startswith("websockets.server")]
    logged = "\n".join(r.getMessage() for r in records)
    # The one line per request, as both LOG_FORMATs write it, fields included.
    request_lines = [r for r in records if r.name == "apis.requests"]
    assert len([r for r in request_lines if r.fields["path"] == "/v1/chat/completions"]) == 4
    rendered = "\n".join(f.format(r) for r in request_lines for f in (JsonFormatter(), TextFormatter()))
    for text in (logged, rendered, *bodies):
        assert not any(secret in text for secret in SECRETS)
    assert PROMPT not in logged and PROMPT not in rendered


def test_prompts_are_logged_only_when_the_operator_asks(
    emulator: BingEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with ServerThread(service_settings(emulator, log_prompts=True)) as url, openai_client(url) as client:
        client.chat.completions.create(model="balanced", messages=user(PROMPT))
    assert any(PROMPT in record.getMessage() for record in caplog.records)


def test_too_many_messages_is_a_400(base_url: str) -> None:
    with openai_client(base_url) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="balanced", messages=user("x") * 501)
    assert caught.value.code == "context_length_exceeded"
