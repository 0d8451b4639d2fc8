"""Several accounts: failover before the first byte, health states, the operator view, file reload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from conversations.account_file import AccountWatcher
from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import eventually, user
from tests.servers import ServerThread, service_settings

ADMIN = {"Authorization": "Bearer admin-secret"}
ACCOUNTS = [
    {"name": "alpha", "cookies": "_U=alpha-secret-cookie"},
    "_U=second-secret-cookie",
    [{"name": "_U", "value": "third-secret-cookie", "domain": ".bing.com"}],
]


@pytest.fixture
def pool_server(emulator: BingEmulator, tmp_path: Path) -> Iterator[tuple[str, ServerThread, Path]]:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(ACCOUNTS))
    settings = service_settings(
        emulator, bing_cookies_file=str(path), admin_key="admin-secret", failover_attempts=3
    )
    server = ServerThread(settings)
    with server as url:
        yield url, server, path


def accounts(url: str) -> dict[str, dict[str, object]]:
    response = httpx.get(f"{url}/v1/accounts", headers=ADMIN)
    assert response.status_code == 200
    assert "secret-cookie" not in response.text
    return {entry["name"]: entry for entry in response.json()["data"]}


def ask(client: OpenAI, text: str = "hi") -> str:
    completion = client.chat.completions.create(model="balanced", messages=user(text))
    return completion.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("fault", "state"),
    [("throttled", "cooling_down"), ("captcha", "needs_captcha"), ("unauthorized", "expired")],
)
def test_account_failure_fails_over_and_is_recorded(
    pool_server: tuple[str, ServerThread, Path], emulator: BingEmulator, fault: str, state: str
) -> None:
    url, _, _ = pool_server
    emulator.faults.chat, emulator.faults.times = fault, 1
    with openai_client(url) as client:
        assert "emulator" in ask(client)
    views = accounts(url)
    assert sorted(v["state"] for v in views.values()) == sorted(["healthy", "healthy", state])
    bad = next(v for v in views.values() if v["state"] == state)
    assert bad["last_error"] and bad["failures"] == 1 and bad["usable"] is False
    assert httpx.get(f"{url}/health").json()["accounts"]["usable"] == 2


@pytest.mark.parametrize("fault", ["http500", "slow"])
def test_transient_create_failures_are_retried(
    pool_server: tuple[str, ServerThread, Path], emulator: BingEmulator, fault: str
) -> None:
    url, _, _ = pool_server
    emulator.faults.create, emulator.faults.times, emulator.faults.slow_seconds = fault, 1, 3
    with openai_client(url) as client:
        assert "emulator" in ask(client)
    assert all(v["state"] == "healthy" for v in accounts(url).values())


def test_a_drop_before_any_text_is_retried_unseen(
    pool_server: tuple[str, ServerThread, Path], emulator: BingEmulator
) -> None:
    url, _, _ = pool_server
    emulator.faults.chat, emulator.faults.times = "close7_start", 1
    with openai_client(url) as client:
        chunks = list(client.chat.completions.create(model="balanced", messages=user("x"), stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_when_every_account_is_throttled_the_client_learns_when_to_come_back(
    pool_server: tuple[str, ServerThread, Path], emulator: BingEmulator
) -> None:
    url, _, _ = pool_server
    emulator.faults.chat = "throttled"
    with openai_client(url) as client, pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert int(caught.value.response.headers["retry-after"]) > 3000
    assert all(v["state"] == "cooling_down" for v in accounts(url).values())
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "degraded" and health["accounts"]["usable"] == 0
    emulator.faults.clear()
    with openai_client(url) as client, pytest.raises(openai.RateLimitError) as again:
        ask(client)  # no account is tried while all cool down: Bing is spared
    assert "cooling down" in again.value.message


def test_a_continued_chat_stays_on_its_account(
    pool_server: tuple[str, ServerThread, Path], emulator: BingEmulator
) -> None:
    url, _, _ = pool_server
    messages = user("first")
    with openai_client(url) as client:
        messages.append({"role": "assistant", "content": ask(client, "first")})
        conversation = emulator.chat_requests[-1]["conversationId"]
        for _ in range(3):
            messages.append({"role": "user", "content": "next"})
            reply = client.chat.completions.create(model="balanced", messages=messages)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            assert emulator.chat_requests[-1]["conversationId"] == conversation


def test_the_operator_view_needs_the_admin_key(pool_server: tuple[str, ServerThread, Path]) -> None:
    url, _, _ = pool_server
    assert httpx.get(f"{url}/v1/accounts").status_code == 401
    assert httpx.get(f"{url}/v1/accounts", headers={"Authorization": "Bearer nope"}).status_code == 401
    views = accounts(url)
    assert set(views) == {"alpha", "account-2", "account-3"}
    assert set(views["alpha"]) >= {"name", "state", "last_error", "uses", "retry_at"}


def test_without_an_admin_key_the_view_is_off(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/accounts")
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"


def test_the_accounts_file_is_reread_without_a_restart(
    pool_server: tuple[str, ServerThread, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, path = pool_server
    monkeypatch.setattr(AccountWatcher, "CHECK_EVERY", 0.0)
    path.write_text(json.dumps([*ACCOUNTS, {"name": "late", "cookies": "_U=late-secret-cookie"}]))
    assert eventually(lambda: "late" in accounts(url))
    path.write_text("{not json")
    assert "late" in accounts(url)  # a broken file keeps the accounts loaded before


def test_the_warm_pool_reports_a_dead_account_and_then_leaves_it_alone(
    emulator: BingEmulator, tmp_path: Path
) -> None:
    emulator.faults.create = "unauthorized"
    before = emulator.create_count
    settings = service_settings(emulator, warm_pool_size=1, admin_key="admin-secret")
    with ServerThread(settings) as url:
        eventually(lambda: accounts(url)["default"]["state"] == "expired")
        tried = emulator.create_count
        assert tried > before
        emulator.faults.clear()
        import time

        time.sleep(1.5)  # past the pool's first back-off: a resting account is not asked again
        assert emulator.create_count == tried


@pytest.mark.parametrize("warm_sockets", [True, False])
def test_a_pooled_conversation_bing_forgot_is_replaced_not_blamed_on_the_account(warm_sockets: bool) -> None:
    from emulator import EmulatorThread

    with EmulatorThread(update_delay=0.001) as emu:
        settings = service_settings(
            emu, warm_pool_size=1, warm_sockets=warm_sockets, admin_key="admin-secret"
        )
        with ServerThread(settings) as url:
            eventually(lambda: all(a["warm_conversations"] == 1 for a in accounts(url).values()))
            emu.conversations.clear()  # Bing no longer accepts the conversation made ahead
            chats = emu.chat_count
            assert "emulator" in ask(openai_client(url), "are you still there")
            assert emu.chat_count == chats + 2  # refused on the forgotten one, answered on a new one
            assert all(a["state"] == "healthy" for a in accounts(url).values())
