"""A lean HTTP/1.1 transport for the shared `httpx.AsyncClient`: kept-alive connections on asyncio
streams, for the upstream hosts the service calls on every request (Bing's create, Copilot's start).

httpx's default transport (httpcore) does per-request pool bookkeeping: it re-checks every pooled
connection's socket and runs its state machine through anyio. That was a fifth of the service's CPU
per short answer. This transport does only what HTTP/1.1 needs: write the request, read the head,
frame the body (Content-Length, chunked, or to the close), and park the connection for the next
request when the server lets it be reused. httpx above it still builds the request, applies the
timeouts it hands down, decodes content encodings and raises its usual exceptions.

It is mounted only when no outbound proxy is configured (proxies keep httpx's own transport).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

READ_CHUNK = 64 * 1024
EAGER_BODY = 64 * 1024  # bodies up to this size are read with the head (a create answer is ~1 KB)
HEAD_LIMIT = 256 * 1024  # response heads larger than this are refused (Bing's are a few KB)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
NO_BODY_STATUSES = frozenset({204, 304})

Origin = tuple[str, str, int]


@dataclass(eq=False, slots=True)
class _Connection:
    """One TCP (or TLS) connection and when it was last parked."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parked_at: float = field(default=0.0)

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle not too long, and the server has not closed it meanwhile."""
        return now - self.parked_at < expiry and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        """Close without waiting for the peer (the transport aborts lingering TLS)."""
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; at most `max_connections` requests in flight at once."""

    def __init__(
        self,
        max_connections: int = 8,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        head, body = _request_bytes(request), await _request_body(request)
        if self._slots.locked():  # wait for a slot, no longer than the pool timeout
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("No connection slot became free in time.", request=request) from exc
        else:  # a free slot is taken at once (no deadline to arm)
            await self._slots.acquire()
        try:
            return await self._exchange(request, origin, head + body, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, request: httpx.Request, origin: Origin, data: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        """Send on a parked connection (retrying once on a fresh one if it turns out stale) or a new one."""
        while True:
            conn, reused = await self._checkout(request, origin, timeouts.get("connect"))
            try:
                conn.writer.write(data)
                if len(data) > READ_CHUNK:
                    await _drain(request, conn, timeouts.get("write"))
                async with asyncio.timeout(timeouts.get("read")):
                    head = await conn.reader.readuntil(b"\r\n\r\n")
                    while head[9:10] == b"1" and head[9:12] != b"101":  # 1xx interim heads: skip them
                        head = await conn.reader.readuntil(b"\r\n\r\n")
                    answer = _parse_head(request, conn, head)
                    if answer.framing.length is not None and 0 < answer.framing.length <= EAGER_BODY:
                        # A small body is read now, under the same deadline as the head.
                        answer.body = await _read_exactly(request, conn, answer.framing.length)
            except TimeoutError as exc:
                conn.close()
                raise httpx.ReadTimeout("The upstream did not answer in time.", request=request) from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn.close()
                got_nothing = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if reused and got_nothing and request.method.encode() in IDEMPOTENT:
                    continue  # the server closed the parked connection just as it was reused
                failure = f"The connection failed ({type(exc).__name__})."
                raise httpx.ReadError(failure, request=request) from exc
            except asyncio.LimitOverrunError as exc:
                conn.close()
                raise httpx.RemoteProtocolError("The response head is too large.", request=request) from exc
            except BaseException:
                conn.close()
                raise
            return self._response(request, origin, conn, answer, timeouts.get("read"))

    async def _checkout(
        self, request: httpx.Request, origin: Origin, connect_timeout: float | None
    ) -> tuple[_Connection, bool]:
        """A parked connection to `origin` still fit for use, else a new one."""
        parked = self._idle.get(origin)
        now = time.monotonic()
        while parked:
            conn = parked.pop()
            if conn.reusable(now, self._keepalive_expiry):
                return conn, True
            conn.close()
        scheme, host, port = origin
        secure = scheme == "https"
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=(self._ssl_context or _default_ssl_context()) if secure else None,
                    server_hostname=host if secure else None,
                    limit=HEAD_LIMIT,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"Connecting to {host}:{port} timed out.", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"Could not connect to {host}:{port} ({exc}).", request=request) from exc
        return _Connection(reader, writer), False

    def _response(
        self,
        request: httpx.Request,
        origin: Origin,
        conn: _Connection,
        answer: _Head,
        read_timeout: float | None,
    ) -> httpx.Response:
        extensions = {"http_version": answer.version, "reason_phrase": answer.reason}
        if answer.body is not None:  # read already: the connection is free for the next request
            self._finished(origin, conn, answer.framing.keep_alive)
            # Given as content, httpx decodes it at once (content encodings included), and the
            # caller's `aread` has nothing left to do.
            return httpx.Response(
                answer.status, headers=answer.headers, content=answer.body, extensions=extensions
            )
        stream = _Body(self, origin, conn, answer.framing, read_timeout, request)
        return httpx.Response(answer.status, headers=answer.headers, stream=stream, extensions=extensions)

    def _finished(self, origin: Origin, conn: _Connection, keep: bool) -> None:
        """A response body was read to its end (`keep`) or abandoned: park or close, free the slot."""
        if keep and not self._closed:
            conn.parked_at = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for parked in self._idle.values():
            for conn in parked:
                conn.close()
        self._idle.clear()


@dataclass(slots=True)
class _Framing:
    """How the body ends: after `length` bytes, at the chunked terminator, or when the server closes."""

    length: int | None
    chunked: bool
    keep_alive: bool


@dataclass(slots=True)
class _Head:
    """A parsed response head, and its body when it was small enough to read with the head."""

    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    framing: _Framing
    body: bytes | None = None


def _parse_head(request: httpx.Request, conn: _Connection, head: bytes) -> _Head:
    """The head's parts; a malformed head closes the connection and is a RemoteProtocolError."""
    try:
        status_line, *lines = head[:-4].split(b"\r\n")
        version, status_text, *reason = status_line.split(b" ", 2)
        status = _status(version, status_text)
        headers = [_header(line) for line in lines if line]
        framing = _framing(request.method, status, version, headers)
    except ValueError as exc:
        conn.close()
        raise httpx.RemoteProtocolError("The response head could not be parsed.", request=request) from exc
    return _Head(version, status, reason[0] if reason else b"", headers, framing)


async def _read_exactly(request: httpx.Request, conn: _Connection, size: int) -> bytes:
    """`size` body bytes; a connection that ends first is a ReadError (never a retry: the head came)."""
    try:
        return await conn.reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        conn.close()
        raise httpx.ReadError("The answer was cut off (IncompleteReadError).", request=request) from exc


class _Body(httpx.AsyncByteStream):
    """The response body; reading it to the end parks the connection for reuse.

    The read timeout applies to each read, as httpx's own transport does, and is never held
    across a `yield`: the consumer's own work between pieces must not count against it (a timer
    still armed then would cancel the consumer's task from outside)."""

    def __init__(
        self,
        transport: LeanTransport,
        origin: Origin,
        conn: _Connection,
        framing: _Framing,
        read_timeout: float | None,
        request: httpx.Request,
    ) -> None:
        self._transport, self._origin, self._conn = transport, origin, conn
        self._framing, self._timeout, self._request = framing, read_timeout, request
        self._left = framing.length
        self._done = False
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                async with asyncio.timeout(self._timeout):
                    piece = await self._next_piece()
                if not piece:
                    break
                yield piece
        except TimeoutError as exc:
            self._release(keep=False)
            raise httpx.ReadTimeout("The upstream's answer stalled.", request=self._request) from exc
        except (asyncio.LimitOverrunError, ValueError) as exc:
            self._release(keep=False)
            failure = f"The answer's framing is malformed ({type(exc).__name__})."
            raise httpx.RemoteProtocolError(failure, request=self._request) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._release(keep=False)
            failure = f"The answer was cut off ({type(exc).__name__})."
            raise httpx.ReadError(failure, request=self._request) from exc
        except BaseException:  # cancelled, or the reader stopped early: the connection is spent
            self._release(keep=False)
            raise
        self._complete = True
        self._release(keep=self._framing.keep_alive)

    async def _next_piece(self) -> bytes:
        """The next piece of the body; b"" once it has ended."""
        reader = self._conn.reader
        if self._framing.chunked:
            return await _next_chunk(reader)
        if self._left is None:  # delimited by the server closing the connection
            return await reader.read(READ_CHUNK)
        if not self._left:
            return b""
        piece = await reader.read(min(self._left, READ_CHUNK))
        if not piece:
            raise asyncio.IncompleteReadError(b"", self._left)
        self._left -= len(piece)
        return piece

    async def aclose(self) -> None:
        self._release(keep=False)

    def _release(self, keep: bool) -> None:
        if not self._done:
            self._done = True
            self._transport._finished(self._origin, self._conn, keep and self._complete)


async def _next_chunk(reader: asyncio.StreamReader) -> bytes:
    """The next chunk's data of a chunked body; b"" after the last chunk and its trailers."""
    size_line = await reader.readuntil(b"\r\n")
    size_text = size_line.split(b";", 1)[0].strip()
    if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
        raise ValueError("a chunk size is not hexadecimal")
    size = int(size_text, 16)
    if size == 0:
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
            pass
        return b""
    piece = await reader.readexactly(size + 2)
    if piece[-2:] != b"\r\n":
        raise ValueError("a chunk did not end with CRLF")
    return piece[:-2]


async def _drain(request: httpx.Request, conn: _Connection, write_timeout: float | None) -> None:
    """Wait until a large request has gone out; a stall is a write timeout."""
    try:
        async with asyncio.timeout(write_timeout):
            await conn.writer.drain()
    except TimeoutError as exc:
        conn.close()
        raise httpx.WriteTimeout("The upstream did not take the request in time.", request=request) from exc


def _status(version: bytes, status_text: bytes) -> int:
    """The status code of a status line; ValueError unless it is HTTP/1.x with three digits."""
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(status_text) != 3 or not status_text.isdigit():
        raise ValueError("malformed status line")
    return int(status_text)


def _framing(method: str, status: int, version: bytes, headers: list[tuple[bytes, bytes]]) -> _Framing:
    length: int | None = None
    chunked = False
    connection = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.isdigit() or (length is not None and length != int(value)):
                raise ValueError("malformed or conflicting Content-Length")
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lowered == b"connection":
            connection = value.lower()
    if method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200:
        length, chunked = 0, False
    elif chunked:
        length = None
    keep_alive = (version == b"HTTP/1.1" and b"close" not in connection) or b"keep-alive" in connection
    if length is None and not chunked:  # delimited by the server closing the connection
        keep_alive = False
    return _Framing(length, chunked, keep_alive)


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep or not name or name != name.strip():
        raise ValueError("malformed header line")
    return name, value.strip()


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"The lean transport does not speak {scheme!r}.")
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _request_bytes(request: httpx.Request) -> bytes:
    """The request line and headers (httpx has set Host, Content-Length or Transfer-Encoding)."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _request_body(request: httpx.Request) -> bytes:
    """The whole request body (the service's are at most an image), framed as its headers say."""
    content = await request.aread()
    if request.headers.get("transfer-encoding", "").lower() == "chunked":
        return (b"%x\r\n%s\r\n0\r\n\r\n" % (len(content), content)) if content else b"0\r\n\r\n"
    return content


_SSL: list[ssl.SSLContext] = []


def _default_ssl_context() -> ssl.SSLContext:
    """httpx's default verification (certifi), offering only HTTP/1.1 by ALPN; made once."""
    if not _SSL:
        context = httpx.create_ssl_context()
        context.set_alpn_protocols(["http/1.1"])
        _SSL.append(context)
    return _SSL[0]
