"""Streamed chat completions through the proxy over one raw keep-alive connection."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.httpraw import HttpError, RawHttp, sse_data

MODEL = "balanced"


@dataclass(slots=True)
class Outcome:
    """One unit of work (a request, or a whole multi-turn chat): success, TTFTs and answer."""

    ok: bool
    ttfts: list[float] = field(default_factory=list)
    requests: int = 1
    text: str = ""
    error: str | None = None


@dataclass(slots=True)
class _Stream:
    """What one SSE body said."""

    started: float
    ttft: float | None = None
    parts: list[str] = field(default_factory=list)
    finish: str | None = None
    done: bool = False
    error: str | None = None

    def feed(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        chunk: dict[str, Any] = orjson.loads(data)
        if "error" in chunk:
            self.error = str((chunk["error"] or {}).get("code") or "in-band error")
            return
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.started
                self.parts.append(content)
            self.finish = choice.get("finish_reason") or self.finish

    def outcome(self) -> Outcome:
        text = "".join(self.parts)
        error = self.error
        if error is None and not self.done:
            error = "no [DONE]"
        if error is None and self.finish != "stop":
            error = f"finish_reason {self.finish}"
        if error is None and (self.ttft is None or not text):
            error = "empty answer"
        ttfts = [self.ttft] if self.ttft is not None else []
        return Outcome(ok=error is None, ttfts=ttfts, text=text, error=error)


class ProxyClient:
    """POST /v1/chat/completions with stream=true and read the SSE body to the end."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.conn = RawHttp(host, port)
        self.timeout = timeout

    async def chat(self, messages: list[dict[str, str]]) -> Outcome:
        """One streamed completion; any failure is an Outcome with an error, never a raise."""
        body = orjson.dumps({"model": MODEL, "messages": messages, "stream": True})
        stream = _Stream(time.perf_counter())
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(body, stream)
        except (TimeoutError, OSError, HttpError, ValueError, asyncio.IncompleteReadError) as exc:
            await self.conn.close()
            return Outcome(ok=False, error=type(exc).__name__)

    async def _exchange(self, body: bytes, stream: _Stream) -> Outcome:
        await self.conn.send("POST", "/v1/chat/completions", {
            "Content-Type": "application/json", "Accept": "text/event-stream",
            "Authorization": "Bearer sk-bench"}, body)
        head = await self.conn.read_head()
        if head.status != 200:
            await self.conn.read_all(head)
            return Outcome(ok=False, error=f"HTTP {head.status}")
        async for data in sse_data(self.conn.body(head)):
            stream.feed(data)
        if not head.keep_alive:
            await self.conn.close()
        return stream.outcome()

    async def close(self) -> None:
        """Close the keep-alive connection."""
        await self.conn.close()
