"""Copilot behind the same API, through the official `openai` client: every model, stream and not,
the error table, reasoning_content, continuation, failover, and the demo."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import eventually, last_answer, user
from tests.servers import ServerThread, service_settings
from utils.settings import Settings

TOKEN = "copilot-test-token-SECRET"
ADMIN = {"Authorization": "Bearer admin-secret"}


def copilot_settings(emulator: BingEmulator, **overrides: Any) -> Settings:
    """A service with a Bing account and a Copilot account, both on the emulator."""
    values: dict[str, Any] = {
        "copilot_url": emulator.copilot_url,
        "copilot_ws_url": emulator.copilot_ws_url,
        "copilot_access_token": TOKEN,
        "copilot_followups_wait": 0.3,
        "admin_key": "admin-secret",
    }
    values.update(overrides)
    return service_settings(emulator, **values)


@pytest.fixture(scope="module")
def copilot_server(emulator: BingEmulator) -> Iterator[ServerThread]:
    server = ServerThread(copilot_settings(emulator))
    with server:
        yield server


@pytest.fixture
def cp_url(copilot_server: ServerThread) -> Iterator[str]:
    port = copilot_server.server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    copilot_server.heal_accounts()


@pytest.fixture
def cp(cp_url: str) -> Iterator[OpenAI]:
    with openai_client(cp_url) as client:
        yield client


def ask(client: OpenAI, model: str, messages: list[dict[str, Any]], stream: bool) -> tuple[str, str, Any]:
    """(content, reasoning, finish chunk or completion) of one request."""
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        message = completion.choices[0].message
        return message.content or "", getattr(message, "reasoning_content", None) or "", completion
    content, reasoning, last = [], [], None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):  # type: ignore[arg-type]
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        reasoning.append(getattr(delta, "reasoning_content", None) or "")
        last = chunk
    return "".join(content), "".join(reasoning), last


def test_models_list_both_upstreams(cp_url: str) -> None:
    models = {m["id"]: m for m in httpx.get(f"{cp_url}/v1/models").json()["data"]}
    for name in (
        "precise",
        "balanced",
        "creative",
        "precise-offline",
        "balanced-offline",
        "creative-offline",
    ):
        assert models[name]["upstream"] == "bing"
    modes = {name: models[name]["mode"] for name in ("copilot", "copilot-reasoning", "copilot-smart")}
    assert modes == {"copilot": "chat", "copilot-reasoning": "reasoning", "copilot-smart": "smart"}
    assert all(models[name]["description"] and models[name]["owned_by"] == "copilot" for name in modes)
    assert httpx.get(f"{cp_url}/v1/models/copilot-smart").json()["mode"] == "smart"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "mode"), [("copilot", "chat"), ("copilot-reasoning", "reasoning"), ("copilot-smart", "smart")]
)
def test_every_copilot_model_answers(
    cp: OpenAI, emulator: BingEmulator, model: str, mode: str, stream: bool
) -> None:
    content, reasoning, last = ask(cp, model, user(f"hello {model}"), stream)
    assert content == last_answer(emulator) and "emulator" in content
    assert emulator.copilot_chat_requests[-1]["mode"] == mode
    eventually(lambda: emulator.connections[-1].completed)  # the emulator's thread notes it after sending
    extras = last.model_dump()["bing"]
    assert extras["suggestions"] and len(extras["sources"]) == 2  # follow-ups and citations, not in content
    assert "Tell me more" not in content
    if mode == "reasoning":
        assert reasoning.startswith("Reasoning (emulated)")
        assert "Reasoning (emulated)" not in content
    else:
        assert reasoning == ""
    assert last.choices[0].finish_reason == "stop"


def test_reasoning_usage_counts_reasoning_tokens(cp: OpenAI) -> None:
    completion = cp.chat.completions.create(model="copilot-reasoning", messages=user("think"))  # type: ignore[arg-type]
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert (completion.usage.completion_tokens_details.reasoning_tokens or 0) > 0


def test_the_token_and_cookies_reach_copilot_and_never_the_client(cp: OpenAI, emulator: BingEmulator) -> None:
    cp.chat.completions.create(model="copilot", messages=user("hi"))  # type: ignore[arg-type]
    assert emulator.connections[-1].token == TOKEN


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("error_event", 502, "upstream_bad_response"),
        ("cloudflare", 503, "upstream_captcha_required"),
        ("drop_start", 502, "upstream_closed"),
        ("stall_start", 504, "upstream_timeout"),
    ],
)
def test_chat_failures_before_text_get_real_statuses(
    cp: OpenAI, fault: str, status: int, code: str, stream: bool
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(cp, "copilot", user(f"emulate:{fault} hi"), stream)
    assert caught.value.status_code == status and caught.value.code == code
    assert TOKEN not in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("http401", 502, "upstream_auth_failed"),
        ("cloudflare", 503, "upstream_captcha_required"),
        ("blocked", 429, "rate_limit_exceeded"),
        ("http429", 429, "rate_limit_exceeded"),
        ("http500", 502, "upstream_bad_response"),
        ("empty", 502, "upstream_bad_response"),
    ],
)
def test_start_failures_get_real_statuses(
    cp: OpenAI, emulator: BingEmulator, fault: str, status: int, code: str, stream: bool
) -> None:
    emulator.faults.create = fault
    with pytest.raises(openai.APIStatusError) as caught:
        ask(cp, "copilot-smart", user("hi"), stream=stream)
    assert caught.value.status_code == status and caught.value.code == code
    if fault == "blocked":
        assert 500 <= int(caught.value.response.headers["retry-after"]) <= 600


@pytest.mark.parametrize("stream", [False, True])
def test_websocket_refused_is_an_auth_failure(cp: OpenAI, emulator: BingEmulator, stream: bool) -> None:
    emulator.faults.upgrade = 403
    with pytest.raises(openai.APIStatusError) as caught:
        ask(cp, "copilot", user("hi"), stream=stream)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"


def test_in_band_error_is_one_data_event_then_done(cp_url: str) -> None:
    body = {"model": "copilot-reasoning", "stream": True, "messages": user("emulate:error_mid go")}
    with httpx.stream("POST", f"{cp_url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "upstream_stream_interrupted" and "Lost the thread" in error["message"]
    assert '"reasoning_content"' in data[1] and not any('"finish_reason":"stop"' in line for line in data)


@pytest.mark.parametrize("fault", ["drop", "error_mid", "no_done", "stall"])
def test_failures_after_text_are_in_band(cp: OpenAI, fault: str) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in cp.chat.completions.create(
            model="copilot", messages=user(f"emulate:{fault} go"), stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
            assert chunk.choices[0].finish_reason is None
    assert "".join(received) and caught.value.code == "upstream_stream_interrupted"
    with pytest.raises(openai.APIStatusError) as status:
        cp.chat.completions.create(model="copilot", messages=user(f"emulate:{fault} go"))  # type: ignore[arg-type]
    assert status.value.status_code == (504 if fault == "stall" else 502)
    assert status.value.code == "upstream_stream_interrupted"


def test_hashcash_is_solved_inside_the_service(cp: OpenAI, emulator: BingEmulator) -> None:
    before = emulator.fault_counts["chat:hashcash_solved"]
    content, _, _ = ask(cp, "copilot", user("emulate:hashcash prove it"), stream=True)
    assert content == last_answer(emulator)
    assert emulator.fault_counts["chat:hashcash_solved"] == before + 1


def test_start_falls_back_to_conversations(cp: OpenAI, emulator: BingEmulator) -> None:
    emulator.faults.create = "no_start"
    before = emulator.copilot_start_count
    content, _, _ = ask(cp, "copilot", user("old endpoint"), stream=False)
    assert content == last_answer(emulator)
    assert emulator.copilot_start_count == before + 2  # /c/api/start (404), then /c/api/conversations


def test_replace_text_and_images(cp: OpenAI, emulator: BingEmulator) -> None:
    content, _, _ = ask(cp, "copilot", user("emulate:replace fix it"), stream=True)
    assert content == last_answer(emulator)
    _, _, completion = ask(cp, "copilot", user("emulate:image draw"), stream=False)
    images = completion.model_dump()["bing"]["images"]
    assert images and images[0]["url"].endswith(".png")


def test_a_resent_chat_continues_one_copilot_conversation(cp: OpenAI, emulator: BingEmulator) -> None:
    starts, continued = emulator.copilot_start_count, emulator.copilot_continued_chat_count
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Answer like a pirate."}]
    for turn in range(3):
        messages.append({"role": "user", "content": f"question {turn}"})
        content, _, _ = ask(cp, "copilot", messages, stream=turn % 2 == 0)
        sent = emulator.copilot_chat_requests[-1]["content"][0]["text"]
        if turn == 0:
            assert sent.startswith("[system](#additional_instructions)\nAnswer like a pirate.")
            assert sent.endswith("question 0")
        else:
            assert sent == f"question {turn}"  # only the new message
        messages.append({"role": "assistant", "content": content})
    assert emulator.copilot_start_count == starts + 1
    assert emulator.copilot_continued_chat_count == continued + 2


def test_an_edited_history_starts_fresh_with_the_history_in_the_first_message(
    cp: OpenAI, emulator: BingEmulator
) -> None:
    first, _, _ = ask(cp, "copilot", user("one"), stream=False)
    starts = emulator.copilot_start_count
    edited = [*user("one"), {"role": "assistant", "content": first + " (edited)"}, *user("two")]
    ask(cp, "copilot", edited, stream=False)
    assert emulator.copilot_start_count == starts + 1
    sent = emulator.copilot_chat_requests[-1]["content"][0]["text"]
    assert "[assistant](#message)" in sent and sent.endswith("two")


def test_first_message_over_budget_is_refused(cp: OpenAI, emulator: BingEmulator) -> None:
    before = emulator.copilot_start_count
    messages = [{"role": "system", "content": "x" * 10_000}, *user("hi")]
    with pytest.raises(openai.BadRequestError) as caught:
        cp.chat.completions.create(model="copilot", messages=messages)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    assert "COPILOT_MAX_PROMPT_CHARS" in caught.value.message
    assert emulator.copilot_start_count == before  # refused before Copilot was asked


def test_the_client_leaving_closes_the_copilot_socket(cp_url: str, emulator: BingEmulator) -> None:
    body = {
        "model": "copilot",
        "stream": True,
        "messages": user("emulate:words=3000 emulate:delay=0.01 long"),
    }
    with httpx.stream("POST", f"{cp_url}/v1/chat/completions", json=body, timeout=10) as response:
        assert next(response.iter_lines()).startswith("data: ")
        record = emulator.connections[-1]
    eventually(lambda: record.closed_at is not None, timeout=2)
    assert record.closed_early_by_client and not record.completed


def test_no_copilot_account_is_a_clear_error(client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="copilot", messages=user("hi"))  # type: ignore[arg-type]
    assert caught.value.status_code == 503 and caught.value.code == "upstream_not_configured"
    assert "COPILOT_ACCESS_TOKEN" in caught.value.message


@pytest.fixture
def pool(emulator: BingEmulator, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "accounts.json"
    path.write_text(
        json.dumps(
            [
                {"name": "cp-expired", "upstream": "copilot", "access_token": "emulate=expired"},
                {
                    "name": "cp-blocked",
                    "upstream": "copilot",
                    "cookies": "__Host-copilot-anon=b; emulate=blocked",
                },
                {
                    "name": "cp-anon",
                    "upstream": "copilot",
                    "cookies": [{"name": "__Host-copilot-anon", "value": "a1"}],
                },
                [{"name": "__Host-copilot-anon", "value": "a2", "domain": "copilot.microsoft.com"}],
            ]
        )
    )
    settings = copilot_settings(
        emulator, bing_cookies_file=str(path), copilot_access_token="", failover_attempts=3
    )
    with ServerThread(settings) as url:
        yield url, path


def test_failover_between_copilot_accounts(pool: tuple[str, Path], emulator: BingEmulator) -> None:
    url, _ = pool
    with openai_client(url) as client:
        for _ in range(4):
            content, _, _ = ask(client, "copilot", user("hi"), stream=True)
            assert content == last_answer(emulator)
        with pytest.raises(openai.APIStatusError) as caught:  # the file has no Bing account
            client.chat.completions.create(model="balanced", messages=user("hi"))  # type: ignore[arg-type]
        assert caught.value.status_code == 503 and caught.value.code == "upstream_not_configured"
    view = {a["name"]: a for a in httpx.get(f"{url}/v1/accounts", headers=ADMIN).json()["data"]}
    assert view["cp-expired"]["state"] == "expired" and view["cp-blocked"]["state"] == "cooling_down"
    assert view["cp-anon"]["state"] == view["account-4"]["state"] == "healthy"
    assert {a["upstream"] for a in view.values()} == {"copilot"}
    assert "emulate=expired" not in json.dumps(view) and "a1" not in json.dumps(view)


def test_when_every_copilot_account_is_blocked_the_client_hears_when_to_retry(
    emulator: BingEmulator,
) -> None:
    settings = copilot_settings(emulator, copilot_access_token="emulate=blocked")
    with ServerThread(settings) as url, openai_client(url) as client:
        for _ in range(2):  # the first meets the ban; the second is told without asking Copilot
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="copilot", messages=user("hi"))  # type: ignore[arg-type]
            assert 500 <= int(caught.value.response.headers["retry-after"]) <= 600
        answer = client.chat.completions.create(model="balanced", messages=user("hi"))  # type: ignore[arg-type]
        assert answer.choices[0].message.content  # Bing is unaffected


def test_the_demo_serves_copilot_models() -> None:
    with (
        ServerThread(Settings(_env_file=None, demo=True)) as url,  # warm pools on, Copilot's too
        openai_client(url) as client,
    ):
        for model in ("copilot", "copilot-reasoning", "copilot-smart", "balanced"):
            content, _, _ = ask(client, model, user("hello"), stream=model == "copilot-reasoning")
            assert "emulator" in content
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="copilot", messages=user("emulate:cloudflare hi"))  # type: ignore[arg-type]
        assert caught.value.status_code == 503


def test_copilot_credentials_and_prompts_stay_out_of_logs_and_errors(
    emulator: BingEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prompt = "my private copilot question 5519"
    settings = copilot_settings(emulator, copilot_cookies="__Host-copilot-anon=ANONSECRET")
    bodies: list[str] = []
    with ServerThread(settings) as url, openai_client(url) as client:
        client.chat.completions.create(model="copilot", messages=user(prompt))  # type: ignore[arg-type]
        for fault in ("http401", "cloudflare"):
            emulator.faults.create = fault
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="copilot", messages=user(prompt))  # type: ignore[arg-type]
            bodies.append(caught.value.response.text)
        emulator.faults.clear()
        bodies.append(httpx.get(f"{url}/v1/accounts", headers=ADMIN).text)
        bodies.append(httpx.get(f"{url}/health").text)
    # websockets.server is the emulator, playing Copilot: it may see what it is sent.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server"))
    for text in (logged, *bodies):
        assert TOKEN not in text and "ANONSECRET" not in text
    assert prompt not in logged


def test_an_expired_copilot_conversation_is_replaced_quietly(cp: OpenAI, emulator: BingEmulator) -> None:
    first, _, _ = ask(cp, "copilot", user("one"), stream=False)
    starts = emulator.copilot_start_count
    emulator.expire_conversations()
    history = [*user("one"), {"role": "assistant", "content": first}, *user("two")]
    content, _, _ = ask(cp, "copilot", history, stream=True)
    assert content == last_answer(emulator)
    assert emulator.copilot_start_count == starts + 1  # the continued turn failed; a fresh one answered
    assert emulator.copilot_chat_requests[-1]["content"][0]["text"].endswith("two")
    assert "[assistant](#message)" in emulator.copilot_chat_requests[-1]["content"][0]["text"]


def test_health_tells_which_upstreams_can_answer(cp_url: str, base_url: str) -> None:
    both = httpx.get(f"{cp_url}/health").json()
    assert both["upstreams"] == {
        "bing": {"accounts": 1, "usable": 1},
        "copilot": {"accounts": 1, "usable": 1},
    }
    assert both["upstream"]["copilot_ws_host"].startswith("127.0.0.1:")
    assert httpx.get(f"{base_url}/health").json()["upstreams"]["copilot"] == {"accounts": 0, "usable": 0}
