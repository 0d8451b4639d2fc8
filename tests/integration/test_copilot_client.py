"""The Copilot network client and the Copilot emulator, over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conversations.account_file import AccountSource, read_accounts
from emulator import BingEmulator
from networks.copilot import (
    CopilotSession,
    copilot_ws_url,
    merge_cookies,
    seconds_until,
    start_copilot_conversation,
)
from networks.http_client import make_http_client
from tests.servers import service_settings
from utils.errors import UpstreamAuthFailed, UpstreamCaptcha, UpstreamRateLimited
from utils.hashcash import solve_hashcash
from utils.settings import Settings

ANON = "__Host-copilot-anon=anon-1"


def settings_for(emulator: BingEmulator) -> Settings:
    return service_settings(
        emulator, copilot_url=emulator.copilot_url, copilot_ws_url=emulator.copilot_ws_url
    )


def start(emulator: BingEmulator, cookies: str = ANON, token: str = "") -> CopilotSession:
    settings = settings_for(emulator)

    async def go() -> CopilotSession:
        async with make_http_client(settings) as http:
            session = await start_copilot_conversation(http, settings, cookies, token)
            assert not http.cookies  # Set-Cookie stays on the session, never in the shared jar
            return session

    return asyncio.run(go())


def test_start_keeps_the_conversation_and_its_cookies(emulator: BingEmulator) -> None:
    session = start(emulator)
    assert session.conversation_id in emulator.copilot_conversations
    assert session.cookies.startswith("__Host-copilot-session=") and session.remaining_turns == 30
    assert merge_cookies(ANON, session.cookies).startswith(ANON + "; __Host-copilot-session=")
    assert not emulator.copilot_conversations[start(emulator, "", "tok").conversation_id].flags


def test_start_falls_back_to_conversations(emulator: BingEmulator) -> None:
    emulator.faults.create = "no_start"
    session = start(emulator)
    assert session.conversation_id in emulator.copilot_conversations and session.remaining_turns is None


@pytest.mark.parametrize(
    ("cookies", "fault", "error"),
    [
        ("", None, UpstreamAuthFailed),  # neither token nor anonymous cookie
        (ANON + "; emulate=expired", None, UpstreamAuthFailed),
        (ANON, "cloudflare", UpstreamCaptcha),
        (ANON, "blocked", UpstreamRateLimited),
        (ANON + "; emulate=throttled", None, UpstreamRateLimited),
    ],
)
def test_start_failures(
    emulator: BingEmulator, cookies: str, fault: str | None, error: type[Exception]
) -> None:
    emulator.faults.create = fault
    with pytest.raises(error):
        start(emulator, cookies)


def test_ban_expiry_becomes_seconds() -> None:
    assert 99 <= seconds_until(time.time() + 100) <= 100
    assert 99 <= seconds_until((time.time() + 100) * 1000) <= 100
    assert seconds_until("2000-01-01T00:00:00Z") == 1
    assert seconds_until(None) == 3600 and seconds_until("soon") == 3600


def test_socket_url_carries_a_session_id_and_the_encoded_token() -> None:
    url = copilot_ws_url("wss://copilot.microsoft.com/c/api/chat?api-version=2", "a/b+c=")
    assert url.startswith("wss://copilot.microsoft.com/c/api/chat?api-version=2&clientSessionId=")
    assert url.endswith("&accessToken=a%2Fb%2Bc%3D")
    assert "accessToken" not in copilot_ws_url("ws://127.0.0.1:1/c/api/chat", "")


async def converse(
    emulator: BingEmulator, session: CopilotSession, text: str, answer: Any = None
) -> list[dict[str, Any]]:
    """Send one turn on a raw socket; `answer(challenge)` replies to a challenge."""
    frames: list[dict[str, Any]] = []
    url = copilot_ws_url(emulator.copilot_ws_url, "")
    async with connect(url, additional_headers={"Cookie": ANON}) as ws:
        send = {
            "event": "send",
            "conversationId": session.conversation_id,
            "mode": "chat",
            "content": [{"type": "text", "text": text}],
        }
        await ws.send(json.dumps(send))
        while True:
            async with asyncio.timeout(5):
                frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["event"] == "challenge" and answer is not None:
                await ws.send(
                    json.dumps(
                        {
                            "event": "challengeResponse",
                            "method": "hashcash",
                            "token": answer(frame["parameter"]),
                        }
                    )
                )
                await ws.send(json.dumps(send))
            if frame["event"] in ("suggestedFollowups", "error"):
                return frames


def test_the_emulator_verifies_the_hashcash_solution(emulator: BingEmulator) -> None:
    session = start(emulator)
    frames = asyncio.run(converse(emulator, session, "emulate:hashcash hi", lambda p: "1"))
    assert frames[-1]["event"] == "error" and frames[-1]["errorCode"] == "challenge-failed"
    frames = asyncio.run(converse(emulator, session, "emulate:hashcash hi", lambda p: solve_hashcash(p, 5)))
    events = [f["event"] for f in frames]
    assert "challenge" in events and events[-2:] == ["done", "suggestedFollowups"]
    assert (
        "".join(f["text"] for f in frames if f["event"] == "appendText")
        == emulator.connections[-1].answer_text
    )


def test_the_emulator_refuses_a_socket_without_credentials(emulator: BingEmulator) -> None:
    async def go() -> None:
        async with connect(emulator.copilot_ws_url):
            pass

    with pytest.raises(InvalidStatus) as caught:
        asyncio.run(go())
    assert caught.value.response.status_code == 401


def test_the_emulator_answers_an_unknown_conversation_with_an_error(emulator: BingEmulator) -> None:
    frames = asyncio.run(converse(emulator, CopilotSession("no-such-conversation"), "hi"))
    assert frames[-1] == {
        "event": "error",
        "errorCode": "conversation-not-found",
        "message": "conversation-not-found",
    }


def test_user_endpoint_tells_signed_in_from_anonymous(emulator: BingEmulator) -> None:
    signed = httpx.get(f"{emulator.copilot_url}/c/api/user", headers={"Authorization": "Bearer t"}).json()
    anonymous = httpx.get(f"{emulator.copilot_url}/c/api/user", headers={"Cookie": ANON}).json()
    assert signed["firstName"] and anonymous["firstName"] is None
    assert httpx.get(f"{emulator.copilot_url}/c/api/user").status_code == 401


def test_account_file_copilot_entries() -> None:
    accounts = read_accounts(
        [
            "_U=bing",
            {"name": "cp", "upstream": "copilot", "access_token": "tok", "cookies": "MUID=1"},
            {"upstream": "copilot", "cookies": [{"name": "__Host-copilot-anon", "value": "x"}]},
            [{"name": "__Host-copilot-anon", "value": "y", "domain": "copilot.microsoft.com"}],
            [{"name": "_U", "value": "z", "domain": ".bing.com"}],
        ]
    )
    assert [(a.name, a.upstream) for a in accounts] == [
        ("account-1", "bing"),
        ("cp", "copilot"),
        ("account-3", "copilot"),
        ("account-4", "copilot"),
        ("account-5", "bing"),
    ]
    assert accounts[1].token == "tok" and accounts[1].signed_in and not accounts[2].signed_in
    assert accounts[2].cookies == "__Host-copilot-anon=x"
    for bad in (
        [{"upstream": "copilot"}],
        [{"upstream": "gemini", "cookies": "a=b"}],
        [{"cookies": "_U=a", "access_token": "t"}],
    ):
        with pytest.raises(ValueError):
            read_accounts(bad)


def test_copilot_settings_add_an_account(tmp_path: Any) -> None:
    loaded = AccountSource("_U=b", None, "", "tok").load()
    assert [(a.name, a.upstream, a.token) for a in loaded] == [
        ("default", "bing", ""),
        ("copilot", "copilot", "tok"),
    ]
    path = tmp_path / "accounts.json"
    path.write_text(
        json.dumps([{"name": "copilot", "upstream": "copilot", "cookies": "__Host-copilot-anon=f"}])
    )
    loaded = AccountSource("", str(path), "__Host-copilot-anon=env", "").load()
    assert [(a.name, a.cookies) for a in loaded] == [("copilot", "__Host-copilot-anon=f")]  # the file wins
    assert "tok" not in repr(AccountSource("", None, "", "tok").load())
