"""The lean websocket client (networks/ws_wire.py) against real loopback servers.

Interop runs against the websockets library's own asyncio server, with and without
permessage-deflate and its parameter variants; the failure cases against a raw asyncio server that
scripts every byte it sends (and reads back the client's close frames).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response

from networks.chathub_ws import HANDSHAKE, RS, ChatHubSocket
from networks.ws_wire import (
    CLOSE_GRACE,
    COMPRESS_FROM,
    WireClosed,
    WireHandshakeError,
    WireSocket,
    WireStatusError,
    open_wire,
    upgrade_request,
)
from tests.integration.test_lean_transport import server_tls
from utils.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamClosed,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WsHandler = Callable[[ServerConnection], Awaitable[None]]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def wire(url: str, compression: bool = True, **kw: Any) -> WireSocket:
    return await open_wire(
        url,
        {"Cookie": "a=1; b=2"},
        origin="https://origin.test",
        user_agent="wire-test/1",
        compression=compression,
        open_timeout=kw.pop("open_timeout", 2.0),
        **kw,
    )


@contextlib.asynccontextmanager
async def ws_server(
    handler: WsHandler,
    extensions: list[ServerExtensionFactory] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[str]:
    """The websockets library's server on a loopback port; yields its ws:// (or wss://) URL."""
    async with serve(
        handler, "127.0.0.1", 0, compression=None, extensions=extensions, ssl=ssl_context,
        max_size=None, ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"wss://localhost:{port}/hub?x=1" if ssl_context else f"ws://127.0.0.1:{port}/hub?x=1"


DEFLATE_VARIANTS = {
    "plain": None,
    "deflate": [ServerPerMessageDeflateFactory()],
    "no-context-takeover": [
        ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)
    ],
    "window-bits": [ServerPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9)],
}


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.mark.parametrize("variant", list(DEFLATE_VARIANTS))
def test_echo_many_messages_with_each_deflate_variant(variant: str) -> None:
    seen: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append((ws.request, ws.protocol.extensions))  # type: ignore[union-attr]
        await echo(ws)

    async def go() -> None:
        async with ws_server(handler, DEFLATE_VARIANTS[variant]) as url:
            sock = await wire(url)
            assert sock.open
            deflate = sock.deflate
            if variant == "plain":
                assert deflate is None
            else:
                assert deflate is not None
                negotiated = (deflate.server_no_context_takeover, deflate.client_no_context_takeover,
                              deflate.server_max_window_bits, deflate.client_max_window_bits)
                assert negotiated == {
                    "deflate": (False, False, 15, 15),
                    "no-context-takeover": (True, True, 15, 15),
                    "window-bits": (False, False, 10, 9),
                }[variant]
            for i in range(60):
                text = f'{{"type":1,"n":{i},"text":"the same words again and again"}}\x1e'
                await sock.send_text(text)
                assert await sock.recv() == text.encode()
            await sock.close()
            assert not sock.open

    run(go())
    request, extensions = seen[0]
    assert request.path == "/hub?x=1"
    assert request.headers["Origin"] == "https://origin.test"
    assert request.headers["User-Agent"] == "wire-test/1"
    assert request.headers["Cookie"] == "a=1; b=2"
    assert request.headers["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits"
    assert len(extensions) == (0 if variant == "plain" else 1)


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_large_messages_both_ways(compression: bool) -> None:
    compressible = "abcdefghij" * 150_000  # 1.5 MB
    random_text = base64.b64encode(os.urandom(1_100_000)).decode()  # ~1.5 MB, barely compressible

    async def go() -> None:
        extensions = DEFLATE_VARIANTS["deflate"] if compression else None
        async with ws_server(echo, extensions) as url:
            sock = await wire(url, compression)
            for text in (compressible, random_text):
                await sock.send_text(text)
                assert await sock.recv() == text.encode()
            await sock.close()

    run(go())


@pytest.mark.parametrize("variant", ["plain", "deflate"])
def test_fragmented_messages_are_assembled(variant: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(["frag", "ment", "ed"])
        await ws.send([b"\x00bin", b"ary"])
        await ws.send("whole")
        await ws.wait_closed()

    async def go() -> None:
        async with ws_server(handler, DEFLATE_VARIANTS[variant]) as url:
            sock = await wire(url)
            assert await sock.recv() == b"fragmented"
            assert await sock.recv() == b"\x00binary"
            assert await sock.recv() == b"whole"
            await sock.close()

    run(go())


def test_a_server_ping_is_answered_with_its_payload() -> None:
    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 1)
        await ws.send("pinged")
        await ws.wait_closed()

    async def go() -> None:
        async with ws_server(handler) as url:
            sock = await wire(url)
            assert await asyncio.wait_for(sock.recv(), 2) == b"pinged"
            await sock.close()

    run(go())


@pytest.mark.parametrize(
    ("ending", "code"), [("close-1000", 1000), ("close-1011", 1011), ("abort", 1006)]
)
def test_messages_before_the_end_are_delivered_then_the_close_code(ending: str, code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")
        if ending == "abort":
            await asyncio.sleep(0.02)
            ws.transport.abort()
        else:
            await ws.close(code, "server trouble")

    async def go() -> None:
        async with ws_server(handler, DEFLATE_VARIANTS["deflate"]) as url:
            sock = await wire(url)
            await asyncio.sleep(0.05)  # everything, the close included, has arrived
            assert not sock.open
            assert sock.buffered()
            assert await sock.recv() == b"one"
            assert await sock.recv() == b"two"
            assert not sock.buffered()
            for _ in range(2):
                with pytest.raises(WireClosed) as caught:
                    await sock.recv()
                assert caught.value.code == code
            with pytest.raises(WireClosed):
                await sock.send_text("too late")
            await asyncio.wait_for(sock.close(), 2)

    run(go())


def close_recorder(codes: list[int | None]) -> Callable[[ServerConnection], Awaitable[None]]:
    """A server handler that notes the close code each connection ends with."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        codes.append(ws.close_code)

    return handler


def test_a_client_close_sends_1000_and_waits_for_the_server() -> None:
    codes: list[int | None] = []

    async def go() -> None:
        async with ws_server(close_recorder(codes)) as url:
            sock = await wire(url)
            await asyncio.wait_for(sock.close(), 2)
            assert not sock.open
            with pytest.raises(WireClosed) as caught:
                await sock.send_text("after close")
            assert caught.value.code == 1000
            await asyncio.sleep(0.01)

    run(go())
    assert codes == [1000]


def test_close_soon_returns_at_once_and_the_handshake_completes_behind_it() -> None:
    codes: list[int | None] = []

    async def go() -> None:
        async with ws_server(close_recorder(codes)) as url:
            sock = await wire(url)
            sock.close_soon()  # not awaited: the protocol's callbacks finish the close
            assert not sock.open
            with pytest.raises(WireClosed):
                await sock.send_text("after close")
            await asyncio.wait_for(sock.close(), 2)  # here only to see the connection end

    run(go())
    assert codes == [1000]


def test_close_soon_cuts_a_server_that_never_ends_tcp() -> None:
    frames: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key))
        await writer.drain()
        frames.append(await read_client_frame(reader))
        writer.write(server_frame(0x88, frames[0][1]))  # echoes the close, then keeps TCP open
        await writer.drain()
        await reader.read()  # returns once the client gives up on the connection

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url)
            started = asyncio.get_running_loop().time()
            sock.close_soon()
            await asyncio.wait_for(sock.close(), CLOSE_GRACE + 1)
            assert asyncio.get_running_loop().time() - started >= CLOSE_GRACE * 0.9

    run(go())
    assert frames == [(0x88, (1000).to_bytes(2, "big"))]


def test_cancelling_a_waiting_recv_loses_no_message() -> None:
    count = 300

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for i in range(count):
            await ws.send(str(i))
            if i % 3 == 0:
                await asyncio.sleep(0.0005)
        await ws.wait_closed()

    async def go() -> None:
        async with ws_server(handler, DEFLATE_VARIANTS["deflate"]) as url:
            sock = await wire(url)
            await sock.send_text("go")
            got: list[bytes] = []
            cancelled = 0
            while len(got) < count:
                try:
                    async with asyncio.timeout(0.0002):
                        got.append(await sock.recv())
                except TimeoutError:
                    cancelled += 1
            assert got == [str(i).encode() for i in range(count)]
            assert cancelled > 0
            await sock.close()

    run(go())


def test_reading_pauses_when_many_messages_wait_and_resumes_when_drained() -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(200):
            await ws.send(str(i))
        await ws.wait_closed()

    async def go() -> None:
        async with ws_server(handler) as url:
            sock = await wire(url)
            await asyncio.sleep(0.1)
            assert sock._paused_reading
            assert sock.buffered()
            got = [await asyncio.wait_for(sock.recv(), 2) for _ in range(200)]
            assert got == [str(i).encode() for i in range(200)]
            assert not sock._paused_reading
            await sock.close()

    run(go())


def test_tls_with_a_trusted_self_signed_certificate() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server_context, cert = server_tls(Path(directory))
        client_context = ssl.create_default_context(cafile=str(cert))

    async def go() -> None:
        async with ws_server(echo, DEFLATE_VARIANTS["deflate"], server_context) as url:
            assert url.startswith("wss://localhost:")
            sock = await wire(url, ssl_context=client_context)
            await sock.send_text("secret")
            assert await sock.recv() == b"secret"
            await sock.close()
            with pytest.raises(ssl.SSLCertVerificationError):  # the default roots do not know it
                await wire(url)

    run(go())


# --- a raw server scripting the failures -----------------------------------------------------


class Raw:
    """A loopback server: reads the upgrade request, then runs `script(reader, writer, key)`."""

    def __init__(self, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter, str], Awaitable[None]]):
        self.script = script
        self.heads: list[str] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/chat"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        self.heads.append(head)
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        with contextlib.suppress(ConnectionError):
            await self.script(reader, writer, key)


def accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching(key: str, *extra: str) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept(key)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def server_frame(b0: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A server frame (masked only when a test wants the protocol error)."""
    size = len(payload)
    flag = 0x80 if mask else 0
    if size < 126:
        head = struct.pack("!BB", b0, flag | size)
    elif size < 65536:
        head = struct.pack("!BBH", b0, flag | 126, size)
    else:
        head = struct.pack("!BBQ", b0, flag | 127, size)
    if mask:
        payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return head + mask + payload
    return head + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame the client sent: (first byte, unmasked payload); checks it is masked."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "client frames must be masked"
    size = b1 & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4)
    data = await reader.readexactly(size)
    return b0, bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def refuse(status: int) -> Callable[..., Awaitable[None]]:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(f"HTTP/1.1 {status} Nope\r\nContent-Length: 2\r\n\r\nno".encode())
        await writer.drain()
        await reader.read()

    return script


@pytest.mark.parametrize("status", [401, 429, 500, 200])
def test_an_upgrade_refused_with_a_status_is_a_status_error(status: int) -> None:
    async def go() -> None:
        async with Raw(refuse(status)) as url:
            with pytest.raises(WireStatusError) as caught:
                await wire(url)
            assert caught.value.status == status

    run(go())


def scripted_head(head: Callable[[str], bytes]) -> Callable[..., Awaitable[None]]:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(head(key))
        await writer.drain()
        await reader.read()

    return script


@pytest.mark.parametrize(
    ("compression", "head"),
    [
        (True, lambda key: switching("x" * 24 if key != "x" * 24 else "y")),
        (True, lambda key: switching(key).replace(b"Upgrade: websocket", b"Upgrade: h2c")),
        (True, lambda key: switching(key).replace(b"Connection: Upgrade", b"Connection: close")),
        (False, lambda key: switching(key, "Sec-WebSocket-Extensions: permessage-deflate")),
        (True, lambda key: switching(key, "Sec-WebSocket-Extensions: x-webkit-deflate-frame")),
        (True, lambda key: switching(key, "Sec-WebSocket-Extensions: permessage-deflate; x_param")),
        (True, lambda key: switching(key, "Sec-WebSocket-Extensions: permessage-deflate; "
                                          "server_max_window_bits=16")),
        (True, lambda key: switching(key, "Sec-WebSocket-Extensions: permessage-deflate, "
                                          "permessage-deflate")),
        (True, lambda key: b"HTTP/1.1 101 OK\r\n" + b"X-Filler: " + b"a" * 70000),
        (True, lambda key: b"SSH-2.0-nope\r\n\r\n"),
    ],
    ids=["wrong-accept", "upgrade-header", "connection-header", "unoffered-extension",
         "unknown-extension", "unknown-parameter", "bad-window-bits", "two-extensions",
         "huge-head", "not-http"],
)
def test_a_bad_upgrade_answer_is_a_handshake_error(compression: bool, head: Callable[[str], bytes]) -> None:
    async def go() -> None:
        async with Raw(scripted_head(head)) as url:
            with pytest.raises(WireHandshakeError):
                await wire(url, compression)

    run(go())


def test_the_upgrade_request_on_the_wire() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key))
        await writer.drain()
        assert await read_client_frame(reader) == (0x88, (1000).to_bytes(2, "big"))

    async def go() -> None:
        raw = Raw(script)
        async with raw as url:
            sock = await wire(url + "?sec_access_token=a%2Fb", compression=False)
            await asyncio.wait_for(sock.close(), 2)
        head = raw.heads[0]
        port = url.split(":")[2].split("/")[0]
        assert head.startswith("GET /chat?sec_access_token=a%2Fb HTTP/1.1\r\n")
        assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head
        assert "\r\nSec-WebSocket-Version: 13\r\n" in head
        assert "Sec-WebSocket-Extensions" not in head
        assert len(base64.b64decode(head.split("Sec-WebSocket-Key: ")[1].split("\r\n")[0])) == 16

    run(go())


@pytest.mark.parametrize("headers", [{"Cookie": "_U=a\r\nX-Evil: 1"}, {"X-A\nB": "v"}])
def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError) as caught:
        upgrade_request("/chat", "", "127.0.0.1", 80, False, b"k" * 24, "https://x", "UA", True, headers)
    assert "_U=a" not in str(caught.value)  # the value (a cookie) is not echoed


def test_frames_in_the_same_packet_as_the_101_head_are_delivered() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key) + server_frame(0x81, b"{}\x1e") + server_frame(0x81, b"hello"))
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url, compression=False)
            assert sock.buffered()
            assert await sock.recv() == b"{}\x1e"
            assert await sock.recv() == b"hello"
            sock.abort()

    run(go())


def test_short_messages_go_uncompressed_and_long_ones_compressed() -> None:
    seen: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key, "Sec-WebSocket-Extensions: permessage-deflate"))
        await writer.drain()
        inflater = zlib.decompressobj(-15)
        for _ in range(3):
            b0, payload = await read_client_frame(reader)
            seen.append((b0, inflater.decompress(payload + b"\x00\x00\xff\xff") if b0 & 0x40 else payload))
        await reader.read()

    short, long = "x" * (COMPRESS_FROM - 1), '{"text": "' + "abc " * COMPRESS_FROM + '"}'

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url)
            await sock.send_text(short)
            await sock.send_text(long)
            await sock.send_text(short)  # after a compressed one: still plain
            while len(seen) < 3:
                await asyncio.sleep(0.005)
            sock.abort()

    run(go())
    assert [b0 for b0, _ in seen] == [0x81, 0xC1, 0x81]  # RSV1 only on the long message
    assert [payload.decode() for _, payload in seen] == [short, long, short]


def compressed(text: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (server_frame(0x81, b"masked", mask=b"abcd"), 1002),
        (server_frame(0x83, b"reserved opcode"), 1002),
        (server_frame(0xA1, b"rsv2"), 1002),
        (server_frame(0xC1, b"rsv1 without deflate"), 1002),
        (server_frame(0x89, b"p" * 126), 1002),
        (server_frame(0x09, b"fragmented ping"), 1002),
        (server_frame(0x80, b"continuation without a start"), 1002),
        (server_frame(0x01, b"start") + server_frame(0x81, b"new message mid-fragments"), 1002),
        (server_frame(0x88, b"\x03"), 1002),
    ],
    ids=["masked", "opcode", "rsv2", "rsv1", "big-control", "fragmented-control", "orphan-continuation",
         "interleaved-start", "one-byte-close"],
)
def test_a_protocol_violation_fails_the_connection_with_a_close(frames: bytes, code: int) -> None:
    sent: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key) + server_frame(0x81, b"before") + frames)
        await writer.drain()
        sent.append(await read_client_frame(reader))
        assert await reader.read() == b""  # then the client closed TCP

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url, compression=False)
            assert await sock.recv() == b"before"
            with pytest.raises(WireClosed) as caught:
                await asyncio.wait_for(sock.recv(), 2)
            assert caught.value.code == code
            assert not sock.open
            await asyncio.wait_for(sock.close(), 2)

    run(go())
    assert sent == [(0x88, code.to_bytes(2, "big"))]


def test_messages_that_end_their_deflate_stream_are_each_inflated() -> None:
    """A server may end each message with a final block (BFINAL=1) instead of a sync flush."""

    def finished(text: bytes) -> bytes:
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        return deflater.compress(text) + deflater.flush(zlib.Z_FINISH)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        frames = b"".join(server_frame(0xC1, finished(text)) for text in (b"first", b"second", b"third"))
        writer.write(switching(key, "Sec-WebSocket-Extensions: permessage-deflate") + frames)
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url)
            got = [await asyncio.wait_for(sock.recv(), 2) for _ in range(3)]
            assert got == [b"first", b"second", b"third"]
            sock.abort()

    run(go())


def test_invalid_compressed_data_fails_with_1007() -> None:
    sent: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key, "Sec-WebSocket-Extensions: permessage-deflate")
                     + server_frame(0xC1, compressed(b"fine"))
                     + server_frame(0xC1, b"\xff\xfe not deflate at all"))
        await writer.drain()
        sent.append(await read_client_frame(reader))

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url)
            assert await sock.recv() == b"fine"
            with pytest.raises(WireClosed) as caught:
                await asyncio.wait_for(sock.recv(), 2)
            assert caught.value.code == 1007

    run(go())
    assert sent == [(0x88, (1007).to_bytes(2, "big"))]


def test_a_close_frame_is_echoed_and_an_empty_one_reads_1005() -> None:
    sent: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key) + server_frame(0x8A, b"unsolicited pong") + server_frame(0x88, b""))
        await writer.drain()
        sent.append(await read_client_frame(reader))
        writer.close()

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url, compression=False)
            with pytest.raises(WireClosed) as caught:
                await asyncio.wait_for(sock.recv(), 2)
            assert caught.value.code == 1005
            await asyncio.wait_for(sock.close(), 2)

    run(go())
    assert sent == [(0x88, b"")]


def test_a_server_that_never_ends_tcp_after_the_close_is_cut_off() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key))
        await writer.drain()
        await read_client_frame(reader)
        writer.write(server_frame(0x88, (1000).to_bytes(2, "big")))
        await writer.drain()
        await reader.read()  # keeps TCP open until the client ends it

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url, compression=False)
            await asyncio.wait_for(sock.close(), 2)  # the client's grace (1 s) ends it

    run(go())


def test_a_connection_reset_mid_message_reads_1006() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching(key) + server_frame(0x81, b"complete") + server_frame(0x81, b"x" * 1000)[:300])
        await writer.drain()
        writer.transport.abort()

    async def go() -> None:
        async with Raw(script) as url:
            sock = await wire(url, compression=False)
            assert await asyncio.wait_for(sock.recv(), 2) == b"complete"
            with pytest.raises(WireClosed) as caught:
                await asyncio.wait_for(sock.recv(), 2)
            assert caught.value.code == 1006

    run(go())


def test_a_connection_ended_before_the_101_is_a_handshake_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(b"HTTP/1.1 101 Swi")
        await writer.drain()

    async def go() -> None:
        async with Raw(script) as url:
            with pytest.raises(WireHandshakeError):
                await wire(url)

    run(go())


def test_an_upgrade_never_answered_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        await reader.read()

    async def go() -> None:
        async with Raw(script) as url:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await wire(url, open_timeout=0.2)
            assert loop.time() - started < 1

    run(go())


def test_nothing_listening_is_an_os_error() -> None:
    async def go() -> None:
        with socket_bound() as port, pytest.raises(OSError):
            await wire(f"ws://127.0.0.1:{port}/")

    run(go())


@contextlib.contextmanager
def socket_bound() -> Any:
    """A loopback port that is bound but not listening (connections to it are refused)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- ChatHubSocket on either client: the same behaviour and the same errors --------------------


BACKENDS = ["lean", "websockets"]


async def signalr_hub(ws: ServerConnection) -> None:
    """A tiny hub: accepts the handshake, answers each record with two messages, `close` closes."""
    assert await ws.recv() == HANDSHAKE
    await ws.send("{}" + RS)
    async for message in ws:
        assert isinstance(message, str)
        if message.endswith('"close"}' + RS):
            await ws.close(1011, "hub failure")
            return
        await ws.send(f'{{"type":1,"echo":{len(message)}}}' + RS)
        await ws.send('{"type":3}' + RS)


def refuse_some(connection: ServerConnection, request: Request) -> Response | None:
    """Upgrade refusals by path: /401 and /429."""
    if request.path.startswith("/4"):
        return connection.respond(int(request.path[1:4]), "refused\n")
    return None


def hub_socket(url: str, backend: str, **kw: Any) -> ChatHubSocket:
    return ChatHubSocket(url, {"Cookie": "k=v"}, proxy=None, open_timeout=kw.pop("open_timeout", 2.0),
                         lean=backend == "lean", **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chathub_socket_turn_on_either_client(backend: str) -> None:
    async def go() -> None:
        async with serve(signalr_hub, "127.0.0.1", 0, process_request=refuse_some) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/hub"
            socket = hub_socket(url, backend)
            async with socket:
                wire_type = type(socket._ws).__name__
                assert wire_type == ("WireSocket" if backend == "lean" else "LibWire")
                assert socket.is_open()
                await socket.send('{"type":4}' + RS)
                # the greeting record went with the first message: 11 + 11 characters
                assert await socket.recv(2) == b'{"type":1,"echo":22}' + RS.encode()
                await asyncio.sleep(0.02)
                assert socket.buffered()
                assert await socket.recv(2) == b'{"type":3}' + RS.encode()
                assert not socket.buffered()
                assert await socket.recv(0.05) is None  # the deadline: None, and the socket lives on
                await socket.send('{"type":4,"target":"close"}' + RS)
                with pytest.raises(UpstreamClosed, match=r"code 1011"):
                    await socket.recv(2)
                assert not socket.is_open()
                with pytest.raises(UpstreamClosed, match=r"code 1011"):
                    await socket.send('{"type":6}' + RS)
            assert not socket.is_open()

    run(go())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("path", "error"),
    [("/401", UpstreamAuthFailed), ("/429", UpstreamRateLimited), ("/hub", None)],
)
def test_chathub_socket_upgrade_errors_map_the_same(backend: str, path: str, error: type | None) -> None:
    async def go() -> None:
        async with serve(signalr_hub, "127.0.0.1", 0, process_request=refuse_some) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"
            if error is None:
                async with hub_socket(url, backend) as socket:
                    assert socket.is_open()
                assert not socket.is_open()
                return
            with pytest.raises(error):
                async with hub_socket(url, backend):
                    pass

    run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_chathub_socket_open_failures_map_the_same(backend: str) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        await reader.read()

    async def wrong_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        writer.write(switching("not-the-key-not-the-key="))
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with Raw(silent) as url:
            with pytest.raises(UpstreamTimeout):
                async with hub_socket(url, backend, open_timeout=0.2):
                    pass
        async with Raw(wrong_accept) as url:
            with pytest.raises(UpstreamBadResponse):
                async with hub_socket(url, backend):
                    pass
        with socket_bound() as port, pytest.raises(UpstreamUnreachable):
            async with hub_socket(f"ws://127.0.0.1:{port}/", backend):
                pass

    run(go())


def test_a_proxy_always_uses_the_websockets_client() -> None:
    assert hub_socket("ws://127.0.0.1:1/", "lean")._lean
    proxied = ChatHubSocket("ws://127.0.0.1:1/", {}, proxy="http://127.0.0.1:3128", open_timeout=1, lean=True)
    assert not proxied._lean
