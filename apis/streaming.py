"""Answer events out to the client: SSE bytes for streams, one object otherwise; disconnects end the turn."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

from fastapi import Request
from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from starlette.types import Receive, Scope, Send

from apis.errors import INTERNAL_MESSAGE, error_body
from apis.health import HealthRecord
from apis.shutdown import drain_guard
from conversations.turn import Answer
from messagers.chunks import (
    ChunkContext,
    completion,
    content_chunk,
    finish_chunk,
    reasoning_chunk,
    role_chunk,
    usage_chunk,
    usage_of,
)
from messagers.events import ContentDelta, Finished, ImageGenerated, ReasoningDelta, Waiting
from messagers.sse import DONE, encode_data
from utils.errors import ProxyError, ServerShuttingDown, UpstreamBadResponse, UpstreamError
from utils.tracking import note_error, note_first_token

log = logging.getLogger(__name__)
T = TypeVar("T")
PING = b": ping\n\n"  # an SSE comment: clients ignore it, proxies see traffic


class ClientGone(Exception):
    """The client disconnected before the response started."""


class AnswerStream(EventSourceResponse):
    """sse-starlette's event-stream response (its headers, ping comments and encoding), run in the
    request's own task with one helper task, instead of four tasks and a cancel scope per write.

    The helper waits for the client to leave, cancelling the stream at once when it does (the body
    generator's cleanup closes the upstream socket), and writes a ping comment every ping interval
    (SSE_PING_SECONDS) until the stream ends. `data: [DONE]` is the last event of an OpenAI stream, so
    it goes out together with the end of the body, in one write.
    """

    def __init__(self, content: AsyncIterator[bytes], *, ping: float, headers: Mapping[str, str]) -> None:
        """sse-starlette's own constructor builds the headers and an anyio lock for every response
        (about 10 µs); the headers are the same for every stream, so that constructor builds them
        once per header set (`stream_headers`), and only what `__call__` uses is set here."""
        self.body_iterator = content
        self.status_code = 200
        self.sep = "\n"
        self.ping_interval = ping
        self.active = True
        self.background = None
        self.raw_headers = list(stream_headers(tuple(headers.items())))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.active = True
        helper = asyncio.get_running_loop().create_task(self._watch(receive, send, task))
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            async for data in self.body_iterator:
                chunk = data if isinstance(data, bytes) else ensure_bytes(data, self.sep)
                last = chunk.endswith(DONE)
                self.active = not last
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    return
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if client_left(helper):
                task.uncancel()
                return
            raise
        finally:
            self.active = False
            helper.cancel()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _watch(self, receive: Receive, send: Send, stream: asyncio.Task[None]) -> bool:
        """True (after cancelling `stream`) when the client disconnects; meanwhile a ping comment
        every ping interval while the stream is still running."""
        ping = self.ping_interval or None
        while True:
            try:
                async with asyncio.timeout(ping):
                    message = await receive()
            except TimeoutError:
                if not self.active:
                    continue
                try:
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                except Exception:  # the stream finished meanwhile: nothing left to keep alive
                    return False
                continue
            if message["type"] == "http.disconnect":
                stream.cancel()
                return True


@functools.lru_cache(maxsize=8)
def stream_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """The raw headers sse-starlette gives an event stream with `headers` added."""

    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    return tuple(EventSourceResponse(nothing(), headers=dict(headers), sep="\n").raw_headers)


def client_left(helper: asyncio.Task[bool]) -> bool:
    """Whether the stream's helper ended because the client disconnected."""
    return helper.done() and not helper.cancelled() and helper.exception() is None and helper.result()


async def sse_body(
    answer: Answer, ctx: ChunkContext, prompt_text: str, health: HealthRecord
) -> AsyncIterator[bytes]:
    """Role chunk, content deltas, the finish chunk (and usage), then [DONE]; errors go in-band.

    Writes are coalesced: the role chunk travels with the first text, and the finish chunk, usage
    and [DONE] go out together. When the server shuts down and the grace period runs out, the
    upstream socket is closed and the stream ends with a `server_shutting_down` error event.
    """
    pending = encode_data(role_chunk(ctx))
    parts: list[str] = []
    thoughts: list[str] = []
    guard = drain_guard()
    try:
        async with aclosing(answer.events()) as events:
            while True:
                async with guard:  # on shutdown, wait for Bing no longer than the grace
                    event = await anext(events, None)
                if event is None:
                    break
                if isinstance(event, ContentDelta):
                    if not parts:
                        note_first_token()
                    parts.append(event.text)
                    yield pending + encode_data(content_chunk(ctx, event.text))
                    pending = b""
                elif isinstance(event, ReasoningDelta):
                    thoughts.append(event.text)
                    yield pending + encode_data(reasoning_chunk(ctx, event.text))
                    pending = b""
                elif isinstance(event, Finished):
                    tail = encode_data(finish_chunk(ctx, event))
                    if ctx.include_usage:
                        usage = usage_of(prompt_text, "".join(parts), "".join(thoughts))
                        tail += encode_data(usage_chunk(ctx, usage))
                    health.record_success()
                    yield pending + tail + DONE
                    return
                elif isinstance(event, (Waiting, ImageGenerated)) and pending:
                    # The stream opened before any text: show the role now. (Citations and
                    # suggestions are ignored here: `Finished` lists them all again.)
                    yield pending
                    pending = b""
        raise UpstreamBadResponse("The upstream's answer ended without a final frame.")
    except ServerShuttingDown as exc:  # the upstream socket is closed by now
        log.info("a stream was ended by the shutdown")
        note_error(exc.code, in_band=True)
        yield pending + encode_data(exc.envelope()) + DONE
    except ProxyError as exc:
        log.warning("stream failed after the first byte: %s", exc.code)
        note_error(exc.code, in_band=True)
        if isinstance(exc, UpstreamError):
            health.record_failure(exc.code or "upstream_error")
        yield pending + encode_data(exc.envelope()) + DONE
    except Exception:
        log.exception("stream failed after the first byte")
        note_error("server_error", in_band=True)
        yield pending + encode_data(error_body(INTERNAL_MESSAGE, "server_error")) + DONE


async def collect_completion(answer: Answer, ctx: ChunkContext, prompt_text: str) -> dict[str, Any]:
    """Fold the whole answer into one `chat.completion`; raises ProxyError on failure."""
    parts: list[str] = []
    thoughts: list[str] = []
    async with aclosing(answer.events()) as events:
        async for event in events:
            if isinstance(event, ContentDelta):
                if not parts:
                    note_first_token()
                parts.append(event.text)
            elif isinstance(event, ReasoningDelta):
                thoughts.append(event.text)
            elif isinstance(event, Finished):
                content, reasoning = "".join(parts), "".join(thoughts)
                return completion(ctx, content, event, usage_of(prompt_text, content, reasoning), reasoning)
    raise UpstreamBadResponse("The upstream's answer ended without a final frame.")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task, cancelling it (and so closing the upstream socket) if the client
    leaves; one watcher task is all it costs."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await wait_for_disconnect(request)
        gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


async def wait_for_disconnect(request: Request) -> None:
    """Return when the ASGI server reports that the client went away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
