"""The lean HTTP/1.1 transport against raw loopback servers that script every byte they send.

Each test runs its own event loop (`asyncio.run`) with a `RawServer` whose handler decides exactly
what goes on the wire, and which counts the TCP connections it accepted and the requests it read.
The transport is used as the service uses it: under an `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from networks.http_client import UpstreamHttp, hot_origins, make_http_client
from networks.lean_transport import EAGER_BODY, LeanTransport
from tests.integration.http_proxy import LoopbackProxy
from utils.settings import Settings


@dataclass
class Received:
    """One request as the server read it off the wire (its body de-chunked, strictly)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Peer:
    """The server side of one accepted connection."""

    server: RawServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> Received | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = await read_chunked(self.reader)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        received = Received(method, target, headers, body)
        self.server.requests.append(received)
        return received

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked request body, checking its framing byte by byte."""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        if size == 0:
            assert await reader.readuntil(b"\r\n") == b"\r\n"
            return body
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"


Handler = Callable[[Peer], Awaitable[None]]


@dataclass
class RawServer:
    """`async with RawServer(handler) as server:` serves on `server.url`."""

    handler: Handler
    ssl_context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _peers: list[Peer] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, self.host, 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self._peers:
            peer.close()
        await asyncio.sleep(0)  # let the closes run before the loop goes

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = Peer(self, reader, writer)
        self._peers.append(peer)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.handler(peer)


Step = bytes | tuple[bytes, str]  # bytes to send, then "keep" the connection, "close" it or "stall"
HANG: Step = (b"", "stall")  # read the request, never reply
DROP: Step = (b"", "close")  # read the request, close the connection without a reply


def answers(*script: Step, close_after: bool = False) -> Handler:
    """Answer each request, across connections, with the script's next step."""
    queue = list(script)

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            step = queue.pop(0)
            data, then = step if isinstance(step, tuple) else (step, "close" if close_after else "keep")
            await peer.send(data)
            if then == "close":
                peer.close()
                return
            if then == "stall":
                await asyncio.sleep(3600)

    return handle


def ok(body: bytes = b"hello", *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A Content-Length answer."""
    lines = [f"{version} 200 OK", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def lean_client(
    transport: LeanTransport | None = None, timeout: float = 2.0, **limits: float
) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or LeanTransport(), timeout=httpx.Timeout(timeout, **limits))


# --- response framing -------------------------------------------------------------------------


def test_content_length_body_and_the_request_on_the_wire() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b"0123456789"))) as server, lean_client() as client:
            response = await client.get(server.url + "/turing/create?x=1", headers={"X-Test": "yes"})
            assert response.status_code == 200 and response.content == b"0123456789"
            assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"
            (seen,) = server.requests
            assert (seen.method, seen.target) == ("GET", "/turing/create?x=1")
            assert seen.headers["host"] == f"127.0.0.1:{server.port}" and seen.headers["x-test"] == "yes"

    run(go())


def test_chunked_body_with_an_extension_and_trailers() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"7\r\n, world\r\n"
        b"0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n"
    )

    async def go() -> None:
        async with RawServer(answers(wire, ok(b"next"))) as server, lean_client() as client:
            assert (await client.get(server.url)).content == b"hello, world"
            assert (await client.get(server.url)).content == b"next"  # the trailers were all consumed
            assert server.connections == 1

    run(go())


def test_close_delimited_body_reads_to_eof_and_is_not_reused() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"

    async def go() -> None:
        async with RawServer(answers(wire, wire, close_after=True)) as server, lean_client() as client:
            assert (await client.get(server.url)).content == b"until the end"
            assert (await client.get(server.url)).content == b"until the end"
            assert server.connections == 2

    run(go())


def test_gzip_content_encoding_is_decoded_above_the_transport() -> None:
    packed = gzip.compress(b'{"result": "Success"}')

    async def go() -> None:
        async with (
            RawServer(answers(ok(packed, "Content-Encoding: gzip"))) as server,
            lean_client() as client,
        ):
            assert (await client.get(server.url)).json() == {"result": "Success"}

    run(go())


# --- keep-alive -------------------------------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b"a"), ok(b"b"), ok(b"c"))) as server, lean_client() as client:
            bodies = [(await client.get(server.url)).content for _ in range(3)]
            assert bodies == [b"a", b"b", b"c"] and server.connections == 1

    run(go())


def test_connection_close_answer_is_not_reused() -> None:
    async def go() -> None:
        script = answers(ok(b"a", "Connection: close"), ok(b"b"))
        async with RawServer(script) as server, lean_client() as client:
            assert (await client.get(server.url)).content == b"a"
            assert (await client.get(server.url)).content == b"b"
            assert server.connections == 2

    run(go())


def test_http_1_0_answer_is_reused_only_with_keep_alive() -> None:
    async def go() -> None:
        plain = ok(b"a", version="HTTP/1.0")
        kept = ok(b"b", "Connection: keep-alive", version="HTTP/1.0")
        async with RawServer(answers(plain, kept, ok(b"c"))) as server, lean_client() as client:
            assert (await client.get(server.url)).content == b"a"
            assert server.connections == 1
            assert (await client.get(server.url)).content == b"b"  # a new connection: 1.0 closes
            assert (await client.get(server.url)).content == b"c"  # reused: keep-alive was asked for
            assert server.connections == 2

    run(go())


def test_idle_longer_than_keepalive_expiry_opens_a_new_connection() -> None:
    async def go() -> None:
        transport = LeanTransport(keepalive_expiry=0.3)
        async with RawServer(answers(ok(), ok(), ok())) as server, lean_client(transport) as client:
            await client.get(server.url)
            await client.get(server.url)
            assert server.connections == 1
            await asyncio.sleep(0.35)
            await client.get(server.url)
            assert server.connections == 2

    run(go())


# --- stale parked connections -----------------------------------------------------------------


def test_a_parked_connection_the_server_closed_is_replaced_for_get_and_post() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b"1"), ok(b"2"), ok(b"3"), close_after=True)) as server:
            async with lean_client() as client:
                assert (await client.get(server.url)).content == b"1"
                assert (await client.get(server.url)).content == b"2"  # parked one was closed: retried
                await asyncio.sleep(0.02)  # the server's FIN has been seen: nothing is sent on it
                assert (await client.post(server.url, content=b"once")).content == b"3"
            assert server.connections == 3
            assert [r.method for r in server.requests] == ["GET", "GET", "POST"]

    run(go())


def test_a_post_the_server_may_have_read_is_never_resent() -> None:
    """The parked connection dies after the server read the POST: that is an error, not a retry."""

    async def go() -> None:
        async with RawServer(answers(ok(b"first"), DROP, ok(b"later"))) as server, lean_client() as client:
            await client.get(server.url)
            with pytest.raises(httpx.ReadError):
                await client.post(server.url, content=b"pay once")
            assert [r.method for r in server.requests] == ["GET", "POST"]  # sent exactly once
            assert (await client.get(server.url)).content == b"later"

    run(go())


def test_a_get_the_reused_connection_lost_is_retried_once_on_a_new_one() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b"first"), DROP, ok(b"again"))) as server, lean_client() as client:
            await client.get(server.url)
            assert (await client.get(server.url)).content == b"again"
            assert [r.method for r in server.requests] == ["GET", "GET", "GET"] and server.connections == 2

    run(go())


def test_a_fresh_connection_that_drops_is_not_retried_even_for_get() -> None:
    async def go() -> None:
        async with RawServer(answers(DROP, ok())) as server, lean_client() as client:
            with pytest.raises(httpx.ReadError):
                await client.get(server.url)
            assert len(server.requests) == 1

    run(go())


# --- request bodies and bodiless answers ------------------------------------------------------


def test_post_with_bytes_sends_content_length() -> None:
    async def go() -> None:
        async with RawServer(answers(ok())) as server, lean_client() as client:
            await client.post(server.url + "/upload", content=b"x" * 100_000)
            (seen,) = server.requests
            assert seen.headers["content-length"] == "100000" and seen.body == b"x" * 100_000

    run(go())


def test_post_with_an_async_generator_sends_a_valid_chunked_body() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    async def go() -> None:
        async with RawServer(answers(ok(), ok())) as server, lean_client() as client:
            await client.post(server.url, content=parts())
            assert server.requests[0].headers["transfer-encoding"] == "chunked"
            assert server.requests[0].body == b"one,two,three"
            await client.get(server.url)  # the framing left the connection in step
            assert server.connections == 1

    run(go())


def test_post_with_an_empty_async_generator() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        parts: list[bytes] = []
        for part in parts:
            yield part

    async def go() -> None:
        async with RawServer(answers(ok(), ok())) as server, lean_client() as client:
            await client.post(server.url, content=nothing())
            await client.get(server.url)
            assert server.requests[0].body == b"" and server.connections == 1

    run(go())


def test_json_body() -> None:
    async def go() -> None:
        async with RawServer(answers(ok())) as server, lean_client() as client:
            await client.post(server.url, json={"prompt": "hi", "n": [1, 2]})
            (seen,) = server.requests
            assert seen.headers["content-type"] == "application/json"
            assert json.loads(seen.body) == {"prompt": "hi", "n": [1, 2]}

    run(go())


def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    bare_204 = b"HTTP/1.1 204 No Content\r\n\r\n"

    async def go() -> None:
        async with (
            RawServer(answers(head, no_content, bare_204, ok(b"after"))) as server,
            lean_client() as client,
        ):
            response = await client.head(server.url)
            assert response.status_code == 200 and response.content == b""
            assert response.headers["content-length"] == "1000"
            assert (await client.delete(server.url)).status_code == 204
            assert (await client.get(server.url)).status_code == 204
            assert (await client.get(server.url)).content == b"after"
            assert server.connections == 1

    run(go())


def test_100_continue_interim_answers_are_skipped() -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + ok(b"final")

    async def go() -> None:
        async with RawServer(answers(wire, ok(b"next"))) as server, lean_client() as client:
            response = await client.post(server.url, content=b"data")
            assert response.status_code == 200 and response.content == b"final"
            assert (await client.get(server.url)).content == b"next" and server.connections == 1

    run(go())


# --- failures ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connect_is_a_connect_error() -> None:
    async def go() -> None:
        async with lean_client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/")

    run(go())


def test_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_connects(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio, "open_connection", never_connects)

    async def go() -> None:
        async with lean_client(connect=0.05) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await client.get("http://127.0.0.1:9/")
            assert time.monotonic() - started < 1

    run(go())


def test_server_that_never_answers_is_a_read_timeout() -> None:
    async def go() -> None:
        async with RawServer(answers(HANG)) as server, lean_client(read=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url)

    run(go())


def test_a_body_that_stalls_is_a_read_timeout() -> None:
    stalled = (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "stall")

    async def go() -> None:
        async with RawServer(answers(stalled)) as server, lean_client(read=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url)

    run(go())


def test_read_timeout_is_per_read_not_for_the_whole_body() -> None:
    """A body that keeps coming, and a consumer slow between pieces, are within a 0.15 s read timeout."""

    async def trickle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for n in range(4):
                await asyncio.sleep(0.06)
                await peer.send(b"2\r\n%02d\r\n" % n)
            await peer.send(b"0\r\n\r\n")

    async def go() -> None:
        async with RawServer(trickle) as server, lean_client(read=0.15) as client:
            assert (await client.get(server.url)).content == b"00010203"
            async with client.stream("GET", server.url) as response:
                pieces = []
                async for piece in response.aiter_raw():
                    pieces.append(piece)
                    await asyncio.sleep(0.1)  # the consumer's own time is not the upstream's
            assert b"".join(pieces) == b"00010203" and server.connections == 1

    run(go())


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "inside-a-chunk", "before-the-last-chunk"],
)
def test_a_body_cut_short_is_a_read_error(wire: bytes) -> None:
    async def go() -> None:
        async with RawServer(answers(wire, close_after=True)) as server, lean_client() as client:
            with pytest.raises(httpx.ReadError):
                await client.get(server.url)

    run(go())


@pytest.mark.parametrize(
    "wire",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"SPDY/9 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name : x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
    ],
    ids=[
        "status-line",
        "status-code",
        "protocol",
        "header-without-colon",
        "space-before-colon",
        "content-length-word",
        "content-length-negative",
        "content-lengths-disagree",
        "chunk-size",
        "chunk-longer-than-its-size",
    ],
)
def test_malformed_answers_are_remote_protocol_errors(wire: bytes) -> None:
    async def go() -> None:
        async with RawServer(answers(wire, ok(b"fine"))) as server, lean_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)
            assert (await client.get(server.url)).content == b"fine"  # on a new connection
            assert server.connections == 2

    run(go())


def test_an_oversized_head_is_a_remote_protocol_error() -> None:
    wire = b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 300_000 + b"\r\n\r\n"

    async def go() -> None:
        async with RawServer(answers(wire)) as server, lean_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)

    run(go())


def test_pool_exhausted_is_a_pool_timeout_and_frees_when_the_body_closes() -> None:
    large = b"x" * (EAGER_BODY + 1)  # streamed, not read with the head: the body holds the slot

    async def go() -> None:
        transport = LeanTransport(max_connections=1)
        async with (
            RawServer(answers(ok(large), ok(b"next"))) as server,
            lean_client(transport, pool=0.05) as client,
        ):
            async with client.stream("GET", server.url) as held:
                assert held.status_code == 200
                with pytest.raises(httpx.PoolTimeout):
                    await client.get(server.url)
            assert (await client.get(server.url)).content == b"next"

    run(go())


def test_a_small_body_is_read_with_its_head_and_frees_the_slot_at_once() -> None:
    async def go() -> None:
        transport = LeanTransport(max_connections=1)
        async with (
            RawServer(answers(ok(b"small"), ok(b"next"))) as server,
            lean_client(transport, pool=0.05) as client,
        ):
            async with client.stream("GET", server.url) as unread:
                assert (await client.get(server.url)).content == b"next"  # the slot was free
                assert await unread.aread() == b"small"
            assert server.connections == 1  # and the connection was parked for the second request

    run(go())


def test_a_small_body_cut_short_is_a_read_error_not_a_retry() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"

    async def go() -> None:
        script = answers(ok(b"first"), (cut, "close"), ok(b"never"))
        async with RawServer(script) as server, lean_client() as client:
            assert (await client.get(server.url)).content == b"first"
            with pytest.raises(httpx.ReadError):
                await client.get(server.url)  # on the parked connection: the head came, so no retry
            assert len(server.requests) == 2

    run(go())


def test_slots_are_released_after_every_failure() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    script = answers(b"garbage\r\n\r\n", (cut, "close"), HANG, (cut, "stall"), ok(b"abandoned"), ok(b"works"))

    async def go() -> None:
        transport = LeanTransport(max_connections=1)
        async with RawServer(script) as server, lean_client(transport, read=0.1, pool=0.05) as client:
            failures: list[type[Exception]] = []
            for url in [f"http://127.0.0.1:{free_port()}/"] + [server.url] * 4:
                try:
                    await client.get(url)
                except httpx.TransportError as exc:
                    failures.append(type(exc))
            assert failures == [
                httpx.ConnectError,
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.ReadTimeout,
                httpx.ReadTimeout,
            ]
            async with client.stream("GET", server.url) as response:  # abandoned unread
                assert response.status_code == 200
            assert (await client.get(server.url)).content == b"works"  # no PoolTimeout: the slot is free
            assert len(server.requests) == 6

    run(go())


def test_cancelled_requests_release_their_slot() -> None:
    async def go() -> None:
        transport = LeanTransport(max_connections=1)
        async with (
            RawServer(answers(HANG, ok(b"after"))) as server,
            lean_client(transport, pool=0.5) as client,
        ):
            pending = asyncio.create_task(client.get(server.url))
            await asyncio.sleep(0.05)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert (await client.get(server.url)).content == b"after"

    run(go())


# --- TLS --------------------------------------------------------------------------------------


def server_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate, and the certificate's file (to trust)."""
    cert, key = self_signed(directory)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    return server_context, cert


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lean-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_with_a_trusted_self_signed_certificate_reuses_the_connection() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server_context, cert = server_tls(Path(directory))
        client_context = ssl.create_default_context(cafile=str(cert))

    async def go() -> None:
        server = RawServer(answers(ok(b"secure 1"), ok(b"secure 2")), ssl_context=server_context)
        async with server, lean_client(LeanTransport(ssl_context=client_context)) as client:
            assert server.url.startswith("https://")
            assert (await client.get(server.url)).content == b"secure 1"
            assert (await client.get(server.url)).content == b"secure 2"
            assert server.connections == 1

    run(go())


def test_tls_with_an_untrusted_certificate_is_a_connect_error() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server_context, _ = server_tls(Path(directory))

    async def go() -> None:
        server = RawServer(answers(ok()), ssl_context=server_context)
        async with server, lean_client() as client:  # certifi's roots: the test certificate is unknown
            with pytest.raises(httpx.ConnectError):
                await client.get(server.url)

    run(go())


# --- mounting in the service's client ---------------------------------------------------------


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "bing_create_url": "http://127.0.0.1:8001/turing/conversation/create",
        "copilot_url": "http://127.0.0.1:8002",
    }
    return Settings(_env_file=None, **(base | values))


def transport_for(client: httpx.AsyncClient, url: str) -> object:
    return client._transport_for_url(httpx.URL(url))


def test_make_http_client_mounts_lean_for_the_hot_origins_only() -> None:
    async def go() -> None:
        async with make_http_client(settings()) as client:
            create = transport_for(client, "http://127.0.0.1:8001/turing/conversation/create")
            assert isinstance(create, LeanTransport)
            assert transport_for(client, "http://127.0.0.1:8002/c/api/start") is create
            for other in (
                "http://127.0.0.1:8003/picture.png",
                "https://127.0.0.1:8001/",
                "http://example.org/",
            ):
                assert not isinstance(transport_for(client, other), LeanTransport), other

    run(go())


@pytest.mark.parametrize(
    "values",
    [{"lean_http": False}, {"bing_proxy": "http://127.0.0.1:3128"}],
    ids=["LEAN_HTTP=0", "BING_PROXY"],
)
def test_make_http_client_keeps_httpx_transport_when_off_or_proxied(values: dict[str, Any]) -> None:
    async def go() -> None:
        async with make_http_client(settings(**values)) as client:
            create = transport_for(client, "http://127.0.0.1:8001/turing/conversation/create")
            assert not isinstance(create, LeanTransport)

    run(go())


def test_a_create_through_a_loopback_proxy_still_works() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b'{"ok": 1}'))) as server, LoopbackProxy() as proxy:
            create_url = server.url + "/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=create_url, bing_proxy=proxy.url)) as client:
                assert (await client.get(create_url)).json() == {"ok": 1}
            assert proxy.seen == [f"GET {create_url}"] and len(server.requests) == 1

    run(go())


def test_the_service_client_reuses_one_connection_for_creates() -> None:
    async def go() -> None:
        async with RawServer(answers(ok(b"1"), ok(b"2"))) as server:
            create_url = server.url + "/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=create_url)) as client:
                assert isinstance(transport_for(client, create_url), LeanTransport)
                assert [(await client.get(create_url)).content for _ in range(2)] == [b"1", b"2"]
            assert server.connections == 1

    run(go())


def test_an_ipv6_literal_gives_a_bracketed_mount_that_works() -> None:
    assert hot_origins(settings(bing_create_url="http://[::1]:8080/turing/conversation/create")) == {
        "http://[::1]:8080",
        "http://127.0.0.1:8002",
    }
    assert "https://[::1]" in hot_origins(settings(copilot_url="https://[::1]/"))

    async def go() -> None:
        async with RawServer(answers(ok(b"over v6")), host="::1") as server:
            create_url = server.url + "/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=create_url)) as client:
                assert isinstance(transport_for(client, create_url), LeanTransport)
                assert (await client.get(create_url)).content == b"over v6"
            assert server.requests[0].headers["host"] == f"[::1]:{server.port}"

    run(go())


def test_a_request_the_server_does_not_take_is_a_write_timeout() -> None:
    async def never_reads(peer: Peer) -> None:
        await asyncio.sleep(3600)

    async def go() -> None:
        async with RawServer(never_reads) as server, lean_client(write=0.1) as client:
            with pytest.raises(httpx.WriteTimeout):
                await client.post(server.url, content=b"x" * 32_000_000)

    run(go())


def test_get_direct_sends_what_get_sends_and_falls_back_off_the_hot_origins() -> None:
    """The create's short cut past the client's layers puts the same request on the wire as
    `client.get`, reuses the connection, keeps no cookie, and is only taken for the hot origins."""
    headers = {"User-Agent": "edge", "Accept": "application/json", "Cookie": "_U=mine"}
    set_cookie = "Set-Cookie: _U=theirs; Path=/"

    async def go() -> None:
        async with RawServer(answers(ok(b"a", set_cookie), ok(b"b", set_cookie), ok(b"c"))) as server:
            create_url = server.url + "/turing/conversation/create?x=1"
            async with make_http_client(settings(bing_create_url=create_url)) as client:
                assert isinstance(client, UpstreamHttp)
                direct = await client.get_direct(create_url, tuple(headers.items()), {"x-fresh": "1"})
                via_client = await client.get(create_url, headers={**headers, "x-fresh": "1"})
                assert (direct.content, via_client.content) == (b"a", b"b")
                assert direct.status_code == 200 and direct.request.url == httpx.URL(create_url)
                elsewhere = await client.get_direct(server.url.replace("127.0.0.1", "localhost") + "/", ())
                assert elsewhere.content == b"c"  # not a hot origin: through the client's own path
            first, second, third = server.requests
            target = ("GET", "/turing/conversation/create?x=1")
            assert (first.method, first.target) == (second.method, second.target) == target
            assert first.headers == second.headers and first.headers["cookie"] == "_U=mine"
            assert first.headers["x-fresh"] == "1"
            assert "cookie" not in third.headers
            assert server.connections == 2  # the hot origin's two requests shared one connection

    run(go())


def test_get_direct_failures_are_httpx_errors() -> None:
    async def go() -> None:
        async with RawServer(answers(HANG)) as server:
            create_url = server.url + "/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=create_url, create_timeout=0.2)) as client:
                assert isinstance(client, UpstreamHttp)
                with pytest.raises(httpx.ReadTimeout):
                    await client.get_direct(create_url, ())
            port = free_port()
            dead = f"http://127.0.0.1:{port}/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=dead)) as client:
                assert isinstance(client, UpstreamHttp)
                with pytest.raises(httpx.ConnectError):
                    await client.get_direct(dead, ())

    run(go())


def test_a_create_cancelled_while_its_body_arrives_frees_the_connection_slot() -> None:
    """A client that leaves during the create (get_direct cancelled mid-body) must not keep the
    transport's slot: with one slot, the next create still goes through."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"

    async def go() -> None:
        async with RawServer(answers((head, "stall"), ok(b"next"))) as server:
            create_url = server.url + "/turing/conversation/create"
            async with make_http_client(settings(bing_create_url=create_url)) as client:
                assert isinstance(client, UpstreamHttp) and client._lean is not None
                client._lean._slots = asyncio.Semaphore(1)
                stuck = asyncio.ensure_future(client.get_direct(create_url, ()))
                await asyncio.sleep(0.1)
                stuck.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stuck
                response = await asyncio.wait_for(client.get_direct(create_url, ()), 2)
                assert response.content == b"next"

    run(go())
