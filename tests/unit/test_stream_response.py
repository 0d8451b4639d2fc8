"""`AnswerStream` builds its headers once per header set: the same ones sse-starlette gives a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse

from apis.routes import SSE_HEADERS
from apis.streaming import AnswerStream


async def nothing() -> AsyncIterator[bytes]:
    yield b""


def test_the_headers_and_settings_are_those_of_sse_starlette() -> None:
    async def both() -> tuple[AnswerStream, EventSourceResponse]:
        ours = AnswerStream(nothing(), ping=7.5, headers=SSE_HEADERS)
        theirs = EventSourceResponse(nothing(), ping=7.5, sep="\n", headers=SSE_HEADERS)
        return ours, theirs

    ours, theirs = asyncio.run(both())
    assert ours.raw_headers == theirs.raw_headers
    assert dict(ours.raw_headers)[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert (ours.status_code, ours.sep, ours.ping_interval) == (theirs.status_code, theirs.sep, 7.5)


def test_each_stream_has_its_own_header_list() -> None:
    first = AnswerStream(nothing(), ping=15, headers=SSE_HEADERS)
    second = AnswerStream(nothing(), ping=15, headers=SSE_HEADERS)
    first.raw_headers.append((b"x-request-id", b"abc"))
    assert (b"x-request-id", b"abc") not in second.raw_headers
