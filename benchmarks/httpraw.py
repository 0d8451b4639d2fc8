"""A minimal HTTP/1.1 client over asyncio streams: keep-alive, Content-Length and chunked bodies.

It exists so the load generator costs little CPU next to the service it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

MAX_LINE = 64 * 1024


class HttpError(Exception):
    """The peer broke the HTTP/1.1 framing or closed the connection early."""


@dataclass(slots=True)
class Head:
    """A response's status and lower-cased headers."""

    status: int
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request."""
        return self.headers.get("connection", "").lower() != "close"


class RawHttp:
    """One keep-alive HTTP/1.1 connection; reconnects lazily after a failure or a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, method: str, path: str, headers: Mapping[str, str],
                   body: bytes = b"") -> None:
        """Write one request (opening the connection if needed)."""
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_LINE)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def read_head(self) -> Head:
        """Read the status line and headers."""
        status_line = await self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {status_line[:40]!r}")
        headers: dict[str, str] = {}
        while line := await self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return Head(int(parts[1]), headers)

    async def body(self, head: Head) -> AsyncIterator[bytes]:
        """Yield the body in pieces (chunked, Content-Length, or until close)."""
        reader = self._stream()
        if "chunked" in head.headers.get("transfer-encoding", "").lower():
            while size := int((await self._line()).split(b";", 1)[0], 16):
                piece = await reader.readexactly(size + 2)
                yield piece[:-2]
            while await self._line():  # trailers
                pass
        elif "content-length" in head.headers:
            length = int(head.headers["content-length"])
            if length:
                yield await reader.readexactly(length)
        else:
            yield await reader.read()
            await self.close()

    async def read_all(self, head: Head) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.body(head)])

    async def close(self) -> None:
        """Close the connection (the next request reconnects)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _stream(self) -> asyncio.StreamReader:
        if self._reader is None:
            raise HttpError("not connected")
        return self._reader

    async def _line(self) -> bytes:
        line = await self._stream().readline()
        if not line.endswith(b"\n"):
            raise HttpError("connection closed mid-response")
        return line.rstrip(b"\r\n")


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payload of every `data:` line of an SSE body (comments and blank lines skipped)."""
    pending = b""
    async for piece in pieces:
        pending += piece
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()
