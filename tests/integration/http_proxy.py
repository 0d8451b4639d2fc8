"""A minimal HTTP proxy on loopback (CONNECT tunnels and absolute-form forwarding) that counts use."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class LoopbackProxy:
    """`async with LoopbackProxy() as proxy:` serves on `proxy.url`; `proxy.seen` lists request lines."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # kept-alive upstream connections stay open otherwise
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, rest = head.decode("latin-1").partition("\r\n")
        method, target, version = request_line.split(" ", 2)
        self.seen.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream_writer.write(f"{method} {path} {version}\r\n{rest}".encode("latin-1"))
        self._writers.add(upstream_writer)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then close the writing side."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.close()
