"""A small HTTP/1.1 server with keep-alive, for the emulator's plain-HTTP endpoints.

Real Bing keeps create connections alive, so a pooled client pays one TCP connection for many
creates; this server does the same. It reads one request at a time per connection (pipelined
requests are answered in order), always answers with Content-Length, and closes a connection on
`Connection: close`, on HTTP/1.0 without `Connection: keep-alive`, after an idle timeout, or after
any framing error (answered first with 400, 413, 431, 501 or 505).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024  # room for a kblob upload (a base64 picture)
IDLE_TIMEOUT = 30.0
LINGER_SECONDS = 1.0
JSON = "application/json; charset=utf-8"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_MAX_BLANK_LINES = 8  # empty lines tolerated before a request line (RFC 9112 §2.2)


@dataclass
class HttpRequest:
    """One parsed request head; header names are lower-cased, repeated headers kept in order."""

    method: str
    target: str
    version: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        """The target's path (an absolute-form target is reduced to its path)."""
        return urlsplit(self.target).path or "/"

    def header(self, name: str, sep: str = ", ") -> str:
        """All values of a header (case-insensitive name) joined by `sep`; "" when absent."""
        return sep.join(self.headers.get(name.lower(), []))

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection carry another request."""
        tokens = {t.strip().lower() for t in self.header("connection").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class HttpReply:
    """A response to send; `content_type` None sends no Content-Type header; `body` may be bytes."""

    status: int
    body: str | bytes = ""
    content_type: str | None = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]


class _Refused(Exception):
    """A request the server answers with an error status and then closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class KeepAliveServer:
    """Serve `handler` over HTTP/1.1 with keep-alive on HOST:PORT (asyncio streams)."""

    def __init__(self, handler: Handler, host: str, port: int = 0, *,
                 idle_timeout: float = IDLE_TIMEOUT,
                 on_connection: Callable[[], None] | None = None) -> None:
        """Configure the server; nothing listens until start()."""
        self._handler, self.host, self._requested_port = handler, host, port
        self.idle_timeout = idle_timeout
        self._on_connection = on_connection
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        if self._server is None:
            raise RuntimeError("HTTP server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """How many client connections are open right now."""
        return len(self._clients)

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._serve, self.host, self._requested_port,
                                                  limit=MAX_HEADER_BYTES + 1024)

    async def stop(self) -> None:
        """Stop listening, then close every open connection (also mid-request ones)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self._clients.items())
        for task, writer in clients:
            writer.close()
            task.cancel()
        await asyncio.gather(*(task for task, _ in clients), return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until it should close."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - start_server always runs us in a task
            writer.close()
            return
        self._clients[task] = writer
        if self._on_connection is not None:
            self._on_connection()
        try:
            while await self._one_request(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or stayed idle too long
        except Exception:
            log.exception("http: connection failed")
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Read, answer and finish one request; return whether to wait for another."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                request = await _read_head(reader)
                if request is None:
                    return False
                request.body = await _read_body(request, reader, writer)
        except _Refused as refused:
            log.debug("http: refusing a request with %d (%s)", refused.status, refused)
            writer.write(encode(HttpReply(refused.status, "", "text/plain; charset=utf-8"),
                                keep_alive=False))
            await writer.drain()
            await _linger(reader, writer)
            return False
        try:
            reply = await self._handler(request)
        except Exception:
            log.exception("http: handler failed for %s %s", request.method, request.target)
            reply, keep = HttpReply(500, "", "text/plain; charset=utf-8"), False
        else:
            keep = request.keep_alive
        writer.write(encode(reply, keep_alive=keep, version=request.version,
                            head_only=request.method == "HEAD"))
        await writer.drain()
        return keep


async def _read_line(reader: asyncio.StreamReader, budget: int) -> bytes | None:
    """One line without its CRLF (or bare LF); None on EOF; 431 when over the header budget."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # a line longer than the stream limit
        raise _Refused(431, "header line too long") from exc
    if len(line) > budget:
        raise _Refused(431, "request head too large")
    if not line.endswith(b"\n"):
        return None  # EOF (possibly mid-line): the client went away
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


async def _read_head(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read and parse a request line plus headers; None when the client closed cleanly."""
    budget = MAX_HEADER_BYTES
    blank = 0
    while True:
        line = await _read_line(reader, budget)
        if line is None:
            return None
        budget -= len(line) + 2
        if line:
            break
        blank += 1
        if blank > _MAX_BLANK_LINES:
            raise _Refused(400, "too many empty lines before the request line")
    request = _request_line(line)
    while True:
        line = await _read_line(reader, budget)
        if line is None:
            raise asyncio.IncompleteReadError(b"", None)
        budget -= len(line) + 2
        if not line:
            return request
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _Refused(400, "malformed header line")  # also rejects obs-fold continuations
        request.headers.setdefault(name.decode("ascii").lower(), []).append(
            value.strip(b" \t").decode("latin-1"))


def _request_line(line: bytes) -> HttpRequest:
    """Parse `METHOD SP target SP HTTP/x.y`."""
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _Refused(400, "malformed request line")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise _Refused(400, "malformed HTTP version")
    if version.group(1) != b"1":
        raise _Refused(505, "only HTTP/1.x is served")
    return HttpRequest(parts[0].decode("ascii"), parts[1].decode("latin-1"),
                       parts[2].decode("ascii"))


async def _read_body(request: HttpRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bytes:
    """Read the request body (Content-Length or chunked), so the handler has it and the next
    request lines up."""
    coding = request.header("transfer-encoding").lower()
    lengths = {v.strip() for v in request.header("content-length").split(",") if v.strip()}
    if coding:
        if lengths or request.version == "HTTP/1.0":
            raise _Refused(400, "Transfer-Encoding with Content-Length or on HTTP/1.0")
        if coding.rsplit(",", 1)[-1].strip() != "chunked":
            raise _Refused(501, "unsupported transfer coding")
        _continue(request, writer)
        return await _read_chunked(reader)
    if not lengths:
        return b""
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise _Refused(400, "invalid Content-Length")
    length = int(lengths.pop())
    if length > MAX_BODY_BYTES:
        raise _Refused(413, "request body too large")
    if not length:
        return b""
    _continue(request, writer)
    return await reader.readexactly(length)


def _continue(request: HttpRequest, writer: asyncio.StreamWriter) -> None:
    """Send `100 Continue` when an HTTP/1.1 client waits for it before sending its body."""
    if request.version == "HTTP/1.1" and "100-continue" in request.header("expect").lower():
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body (its trailers dropped)."""
    total, budget, parts = 0, MAX_HEADER_BYTES, []
    while True:
        line = await _read_line(reader, budget)
        if line is None:
            raise asyncio.IncompleteReadError(b"", None)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _Refused(400, "malformed chunk size") from exc
        total += size
        if size < 0 or total > MAX_BODY_BYTES:
            raise _Refused(413, "request body too large")
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _Refused(400, "chunk not followed by CRLF")
    while (line := await _read_line(reader, budget)) is not None and line:  # trailers
        budget -= len(line) + 2
    if line is None:
        raise asyncio.IncompleteReadError(b"", None)
    return b"".join(parts)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drain what the client still sends, so the error reply is not lost to an RST."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(LINGER_SECONDS):
            drained = 0
            while drained < MAX_BODY_BYTES and (chunk := await reader.read(65536)):
                drained += len(chunk)


def encode(reply: HttpReply, *, keep_alive: bool, version: str = "HTTP/1.1",
           head_only: bool = False) -> bytes:
    """Serialise a reply; every response carries Content-Length."""
    body = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"Date: {formatdate(usegmt=True)}",
             f"Content-Length: {len(body)}"]
    if reply.content_type is not None:
        lines.append(f"Content-Type: {reply.content_type}")
    lines += [f"{name}: {value}" for name, value in reply.headers]
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
