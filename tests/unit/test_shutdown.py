"""The drain: guards cut waits at the grace deadline; the middleware answers 503 or lets a stream go."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from apis.shutdown import Drain, Draining, current_drain, drain_guard
from utils.errors import ServerShuttingDown
from utils.settings import Settings


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def test_a_guarded_wait_is_cut_at_the_grace_deadline() -> None:
    async def main() -> float:
        drain = Drain(0.1)

        async def wait() -> None:
            async with drain.guard():
                await asyncio.sleep(10)

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.02)
        began = asyncio.get_running_loop().time()
        drain.begin()
        with pytest.raises(ServerShuttingDown) as caught:
            await asyncio.wait_for(task, 2)
        assert caught.value.status == 503 and caught.value.code == "server_shutting_down"
        return asyncio.get_running_loop().time() - began

    assert 0.08 < run(main) < 0.5


def test_guards_without_a_drain_or_released_are_never_cut() -> None:
    async def main() -> None:
        drain = Drain(0.01)
        async with drain_guard():  # no drain in this context: a no-op
            await asyncio.sleep(0)
        async with drain.guard() as guard:
            guard.release()
            drain.begin()
            await asyncio.sleep(0.05)
        with pytest.raises(ServerShuttingDown):  # past the deadline: refused at once
            async with drain.guard():
                pass
        assert current_drain.get() is None

    run(main)


async def call(app: Callable[[Scope, Receive, Send], Awaitable[None]], drain_after: float) -> list[Message]:
    middleware = Draining(app, Settings(_env_file=None, shutdown_grace_seconds=0.1))
    sent: list[Message] = []
    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}

    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.create_task(middleware(scope, receive, send))
    await asyncio.sleep(drain_after)
    middleware.drain.begin()
    await asyncio.wait_for(task, 2)
    return sent


def test_a_response_not_started_by_the_deadline_gets_503() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10)

    sent = run(lambda: call(slow, 0.01))
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "server_shutting_down"


def test_a_started_response_is_left_to_finish_on_its_own() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.3)  # well past the grace: the middleware does not cut it
        await send({"type": "http.response.body", "body": b"done", "more_body": False})

    sent = run(lambda: call(streaming, 0.01))
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"done"]
