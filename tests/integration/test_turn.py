"""The conversation layer against the emulator over loopback: a whole turn, and both legs via a proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conversations.accounts import Account, AccountPool
from conversations.plan import plan_turn
from conversations.threads import MemoryStore
from conversations.turn import Upstream, open_answer
from emulator import BingEmulator
from messagers.events import ContentDelta, Finished
from networks.http_client import create_conversation, make_http_client
from networks.ws_wire import finish_closes
from tests.integration.http_proxy import LoopbackProxy
from tests.servers import service_settings
from utils.errors import UpstreamAuthFailed
from utils.settings import Settings


async def answer_text(settings: Settings, prompt: str) -> tuple[str, Finished | None]:
    async with make_http_client(settings) as http:
        plan = plan_turn([{"role": "user", "content": prompt}], "balanced", None, settings)
        accounts = AccountPool([Account("default", settings.bing_cookies)], 4)
        answer = await open_answer(plan, Upstream(settings, http, MemoryStore(10, 60), accounts))
        parts, finished = [], None
        async for event in answer.events():
            if isinstance(event, ContentDelta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                finished = event
        return "".join(parts), finished


def run(coro: Any) -> Any:
    """Run `coro`, then let the sockets' clean closes (which finish behind a turn) end."""

    async def and_finish() -> Any:
        try:
            return await coro
        finally:
            await finish_closes()

    return asyncio.run(and_finish())


def test_a_whole_turn(emulator: BingEmulator) -> None:
    text, finished = run(answer_text(service_settings(emulator), "hello"))
    assert "emulator" in text and finished is not None and finished.reason == "stop"
    assert emulator.connections[-1].completed


def test_cookies_go_to_both_legs_and_are_not_kept(emulator: BingEmulator) -> None:
    settings = service_settings(emulator)

    async def create_twice() -> None:
        async with make_http_client(settings) as http:
            await create_conversation(http, settings, settings.bing_cookies)
            assert not http.cookies  # a Set-Cookie never leaks into the next request
            await create_conversation(http, settings, settings.bing_cookies)

    run(create_twice())
    assert all(c.signed_in for c in list(emulator.conversations.values())[-2:])


def test_create_result_failure_maps(emulator: BingEmulator) -> None:
    emulator.faults.create = "unauthorized"
    settings = service_settings(emulator)

    async def create() -> None:
        async with make_http_client(settings) as http:
            await create_conversation(http, settings, settings.bing_cookies)

    with pytest.raises(UpstreamAuthFailed):
        run(create())


def test_both_legs_go_through_the_configured_proxy(emulator: BingEmulator) -> None:
    async def through_proxy() -> tuple[str, list[str]]:
        async with LoopbackProxy() as proxy:
            text, _ = await answer_text(service_settings(emulator, bing_proxy=proxy.url), "via proxy")
            return text, proxy.seen

    text, seen = run(through_proxy())
    assert "emulator" in text
    assert any(
        line.startswith("GET http://127.0.0.1") and "/turing/conversation/create" in line for line in seen
    )
    assert any(line.startswith(f"CONNECT 127.0.0.1:{emulator.port}") for line in seen)


def test_a_turn_without_websocket_compression(emulator: BingEmulator) -> None:
    text, finished = run(answer_text(service_settings(emulator, bing_ws_compression=False), "plain"))
    assert "emulator" in text and finished is not None


def test_search_chatter_is_not_requested(emulator: BingEmulator) -> None:
    run(answer_text(service_settings(emulator), "what is new"))
    allowed = emulator.chat_requests[-1]["allowedMessageTypes"]
    assert "InternalSearchQuery" in allowed and "Chat" in allowed
    assert "InternalSearchResult" not in allowed and "InternalLoaderMessage" not in allowed


def test_the_shared_client_never_keeps_a_set_cookie() -> None:
    import httpx

    from networks.http_client import UpstreamHttp

    def bing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Set-Cookie": "_U=other-account; Domain=.bing.com; Path=/"})

    async def twice() -> tuple[httpx.Request, httpx.Cookies]:
        transport = httpx.MockTransport(bing)
        async with UpstreamHttp(transport=transport, cookies={"_U": "given"}) as http:
            http.cookies = {"_U": "set later"}
            http.cookies.set("_U", "set on the jar")
            http.cookies.update({"_U": "merged in"})
            await http.get("https://www.bing.com/turing/conversation/create")
            second = await http.get("https://www.bing.com/turing/conversation/create")
            return second.request, http.cookies

    request, kept = run(twice())
    assert "cookie" not in request.headers
    assert not kept


def test_frames_that_arrived_together_go_out_as_one_delta(emulator: BingEmulator) -> None:
    """Updates already waiting in the socket when the reader gets to them make one write, not one each."""
    from conversations.bing import chathub_socket, read_answer
    from conversations.request import build_chat_request
    from messagers.frames import encode_record

    settings = service_settings(emulator)
    plan = plan_turn([{"role": "user", "content": "emulate:words=24 emulate:chunk=2 together"}],
                     "balanced", None, settings)

    async def turn() -> list[Any]:
        async with make_http_client(settings) as http:
            session = await create_conversation(http, settings, settings.bing_cookies)
        request = build_chat_request(plan.prompt, session, plan.model, settings.bing_locale, turn=0)
        async with chathub_socket(settings, session, settings.bing_cookies) as socket:
            await socket.send(encode_record(request))
            for _ in range(200):  # until the whole answer (12 updates and the final) is waiting here
                await asyncio.sleep(0.01)
                if emulator.connections[-1].completed:
                    break
            await asyncio.sleep(0.05)
            return [event async for event in read_answer(socket, plan.options, settings)]

    events = run(turn())
    deltas = [event for event in events if isinstance(event, ContentDelta)]
    assert len(deltas) == 1 and len(deltas[0].text.split()) >= 24
    assert isinstance(events[-1], Finished)


def test_socket_waits_end_at_their_deadline_and_lose_nothing(emulator: BingEmulator) -> None:
    """`recv` gives None at its deadline (the next one still gets every frame), and a cancellation
    from outside (a client that left) is not mistaken for that deadline."""
    from conversations.bing import chathub_socket
    from conversations.request import build_chat_request
    from messagers.frames import encode_record

    settings = service_settings(emulator)
    plan = plan_turn([{"role": "user", "content": "emulate:think=0.3 deadline"}], "balanced", None, settings)

    async def turn() -> tuple[list[bytes | None], bool]:
        async with make_http_client(settings) as http:
            session = await create_conversation(http, settings, settings.bing_cookies)
        request = build_chat_request(plan.prompt, session, plan.model, settings.bing_locale, turn=0)
        async with chathub_socket(settings, session, settings.bing_cookies) as socket:
            started = asyncio.get_running_loop().time()
            got: list[bytes | None] = [await socket.recv(0.05)]  # nothing was asked yet
            assert asyncio.get_running_loop().time() - started < 1.0
            await socket.send(encode_record(request))
            while got[-1] is None or b'"type":2' not in got[-1]:  # the emulator thinks 0.3 s first
                got.append(await socket.recv(0.02))
                assert len(got) < 200
            waiting = asyncio.ensure_future(socket.recv(5))
            await asyncio.sleep(0.05)
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                cancelled = True
            else:
                cancelled = False
        return got, cancelled

    got, cancelled = run(turn())
    first = next(index for index, frame in enumerate(got) if frame is not None)
    assert got[0] is None and None in got[first + 1:]  # deadlines met before and between frames
    assert b'"value":"Success"' in (got[-1] or b"") and any(b'"author":"bot"' in (f or b"") for f in got)
    assert cancelled
