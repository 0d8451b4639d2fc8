"""A lean websocket client (RFC 6455, with RFC 7692 permessage-deflate) on an `asyncio.Protocol`.

It does what the ChatHub and Copilot sockets need and no more: one upgrade, text messages out,
data messages in, pings answered, a clean close. The per-frame path parses straight from the
received bytes with int operations: no generators, no per-frame objects but the payload, no
per-frame timers or tasks. A `recv` that finds a message waiting creates no future at all.

Limits and choices, on purpose:
- No maximum message size: Bing's final frames can be large (PROTOCOL.md §2.2).
- Text payloads are not validated as UTF-8 here (the callers parse them as JSON, which does).
- No keep-alive pings of our own: SignalR and Copilot keep the socket alive themselves.
- Flow control: past MAX_QUEUED complete messages waiting unread, reading pauses until the
  reader has taken them down to RESUME_QUEUED.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import os
import ssl
import struct
import zlib
from typing import cast
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 65536  # bytes of the upgrade answer's head we accept
MAX_QUEUED = 32  # complete messages waiting unread before reading pauses
RESUME_QUEUED = 8  # ... and the level at which it resumes
CLOSE_GRACE = 1.0  # seconds the server has to end TCP after the closing handshake
# Messages shorter than this go uncompressed (RSV1 clear), which permessage-deflate allows per message:
# a first turn's invocation (~2.5 KB) would cost a compressor (~300 KB to set up) and 25-90 us of CPU
# to save two kilobytes; invocations carrying a long context are compressed.
COMPRESS_FROM = 4096
TAIL = b"\x00\x00\xff\xff"  # what a sync flush ends with; stripped on send, put back on receive

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

_default_ssl: ssl.SSLContext | None = None


class WireClosed(Exception):
    """The connection is closed: `code` is the peer's close code (1005 for an empty close frame,
    1006 when TCP ended without one), or ours when we failed the connection (1002, 1007)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"websocket closed (code {code})")
        self.code = code


class WireStatusError(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"websocket upgrade refused with HTTP {status}")
        self.status = status


class WireHandshakeError(Exception):
    """The server's 101 answer was not a valid websocket upgrade (or the connection ended first)."""


def default_ssl_context() -> ssl.SSLContext:
    """One verifying client context for the process (building one loads the CA store: costly)."""
    global _default_ssl
    if _default_ssl is None:
        _default_ssl = ssl.create_default_context()
    return _default_ssl


async def open_wire(
    url: str,
    headers: dict[str, str],
    *,
    origin: str,
    user_agent: str,
    compression: bool,
    open_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> WireSocket:
    """Connect to a ws:// or wss:// `url` and upgrade; the whole open is bounded by `open_timeout`
    (-> TimeoutError). Raises WireStatusError (not 101), WireHandshakeError (bad 101), OSError."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a websocket URL: {parts.scheme}://{parts.hostname}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    key = base64.b64encode(os.urandom(16))
    request = upgrade_request(parts.path or "/", parts.query, host, port, secure, key,
                              origin, user_agent, compression, headers)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(open_timeout):
        _, wire = await loop.create_connection(
            lambda: WireSocket(request, key, compression),
            host,
            port,
            ssl=(ssl_context or default_ssl_context()) if secure else None,
            server_hostname=host if secure else None,
        )
        try:
            await wire.upgraded
        except BaseException:
            wire.abort()
            raise
    return wire


def upgrade_request(
    path: str, query: str, host: str, port: int, secure: bool, key: bytes,
    origin: str, user_agent: str, compression: bool, headers: dict[str, str],
) -> bytes:
    """The HTTP/1.1 upgrade request's bytes (PROTOCOL.md §2.2)."""
    target = f"{path}?{query}" if query else path
    authority = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        authority = f"{authority}:{port}"
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {authority}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
        f"User-Agent: {user_agent}",
    ]
    if compression:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"a line break in the value of the {name!r} header")  # (value not echoed)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def accept_key(key: bytes) -> str:
    """The Sec-WebSocket-Accept value the server must answer `key` with."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


class Deflate:
    """The negotiated permessage-deflate parameters (the defaults: what absent parameters mean)."""

    def __init__(self) -> None:
        self.server_no_context_takeover = False
        self.client_no_context_takeover = False
        self.server_max_window_bits = 15
        self.client_max_window_bits = 15


def parse_extensions(value: str) -> Deflate:
    """The server's Sec-WebSocket-Extensions answer to our single permessage-deflate offer."""
    offers = [part.strip() for part in value.split(",") if part.strip()]
    if len(offers) != 1:
        raise WireHandshakeError("the server accepted extensions we did not offer")
    name, *params = [item.strip() for item in offers[0].split(";")]
    if name.lower() != "permessage-deflate":
        raise WireHandshakeError("the server accepted an extension we did not offer")
    deflate, seen = Deflate(), set()
    for param in params:
        pname, has_value, raw = param.partition("=")
        pname, raw = pname.strip().lower(), raw.strip().strip('"')
        if pname in seen:
            raise WireHandshakeError(f"duplicate extension parameter {pname}")
        seen.add(pname)
        if pname in ("server_no_context_takeover", "client_no_context_takeover"):
            if has_value:
                raise WireHandshakeError(f"{pname} takes no value")
            setattr(deflate, pname, True)
        elif pname in ("server_max_window_bits", "client_max_window_bits"):
            if not (raw.isdigit() and len(raw) <= 2 and 8 <= int(raw) <= 15):
                raise WireHandshakeError(f"bad {pname}")
            setattr(deflate, pname, int(raw))
        else:
            raise WireHandshakeError(f"unknown extension parameter {pname}")
    if deflate.client_max_window_bits == 8:  # zlib cannot compress with a 256-byte window
        raise WireHandshakeError("client_max_window_bits=8 is not supported")
    return deflate


def parse_head(head: bytes, key: bytes, offered: bool) -> Deflate | None:
    """Check the upgrade answer's head; the negotiated deflate parameters, or None without."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise WireHandshakeError("the upgrade answer is not HTTP/1.1")
    if int(code) != 101:
        raise WireStatusError(int(code))
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise WireHandshakeError("a malformed header line in the upgrade answer")
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    if fields.get("upgrade", "").lower() != "websocket":
        raise WireHandshakeError("the answer does not upgrade to websocket")
    if "upgrade" not in [token.strip().lower() for token in fields.get("connection", "").split(",")]:
        raise WireHandshakeError("the answer's Connection header lacks upgrade")
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise WireHandshakeError("wrong Sec-WebSocket-Accept")
    extensions = fields.get("sec-websocket-extensions")
    if extensions is None:
        return None
    if not offered:
        raise WireHandshakeError("the server accepted an extension we did not offer")
    return parse_extensions(extensions)


def mask_payload(payload: bytes) -> bytes:
    """A fresh 4-byte masking key followed by the payload XORed with it."""
    key = os.urandom(4)
    size = len(payload)
    if not size:
        return key
    repeated = key * ((size + 3) >> 2)
    if size != len(repeated):
        repeated = repeated[:size]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return key + masked.to_bytes(size, "little")


def frame(opcode_byte: int, payload: bytes) -> bytes:
    """One masked client frame; `opcode_byte` carries FIN, RSV1 and the opcode."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", opcode_byte, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", opcode_byte, 0xFE, size)
    else:
        head = struct.pack("!BBQ", opcode_byte, 0xFF, size)
    return head + mask_payload(payload)


_CLOSING: set[WireSocket] = set()  # closes begun by `close_soon` and not finished yet


async def finish_closes(timeout: float = CLOSE_GRACE + 1) -> None:
    """Wait, at most `timeout` seconds, for every close begun by `close_soon` to finish (before a
    loop stops: at shutdown, or at the end of a test's loop)."""
    closing = [wire.close() for wire in list(_CLOSING)]
    if closing:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*closing, return_exceptions=True)


class WireSocket(asyncio.Protocol):
    """One client websocket connection (made by `open_wire`)."""

    def __init__(self, request: bytes, key: bytes, offered: bool) -> None:
        self._request, self._key, self._offered = request, key, offered
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # (asked once: in 3.11 each ask is a getpid call)
        self.upgraded: asyncio.Future[None] = self._loop.create_future()
        self._head = bytearray()  # the upgrade answer while it arrives
        self._upgrading = True  # until the 101 head has been read (or the upgrade failed)
        self._buf = bytearray()  # received bytes not yet parsed into whole frames
        self._messages: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None  # a `recv` waiting for a message
        self._code: int | None = None  # set once the connection is closed or failed
        self._close_sent = 0  # the code of the close frame we sent (0: none)
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] | None = None  # a fragmented message being assembled
        self._fragmented_compressed = False
        self._rsv_allowed = 0  # RSV bits a data frame may carry (RSV1 once deflate is negotiated)
        self._inflater: zlib._Decompress | None = None
        self._deflater: zlib._Compress | None = None
        self.deflate: Deflate | None = None  # the negotiated permessage-deflate parameters
        self._flush_mode = zlib.Z_SYNC_FLUSH

    # -- the public side ------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True until a close begins (either side) or the connection is lost."""
        return self._code is None and not self._close_sent and not self._lost

    def buffered(self) -> bool:
        """Whether a complete message is already waiting (so `recv` will not wait)."""
        return bool(self._messages)

    async def send_text(self, text: str) -> None:
        """Send `text` as one text message (compressed when deflate was negotiated)."""
        if not self.open:
            raise WireClosed(self._closed_code())
        transport = self._transport
        assert transport is not None
        payload = text.encode()
        if self.deflate is not None and len(payload) >= COMPRESS_FROM:
            deflater = self._deflater or self._new_deflater(self.deflate)
            payload = deflater.compress(payload) + deflater.flush(self._flush_mode)
            if payload.endswith(TAIL):
                payload = payload[:-4]
            transport.write(frame(0xC1, payload))
        else:
            transport.write(frame(0x81, payload))
        if self._paused_writing:
            await self._drain()

    async def recv(self) -> bytes:
        """The next data message's payload (inflated; text or binary). Cancelling a waiting
        `recv` loses nothing: messages stay queued until returned. Raises WireClosed once the
        connection is closed and every message that came before the close has been returned."""
        messages = self._messages
        while not messages:
            if self._code is not None:
                raise WireClosed(self._code)
            if self._lost:
                raise WireClosed(self._closed_code())
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = messages.popleft()
        if self._paused_reading and len(messages) <= RESUME_QUEUED:
            self._resume_reading()
        return message

    async def close(self) -> None:
        """Send a close frame (1000) unless one was sent, then wait until the server has closed
        the connection (the caller bounds the wait)."""
        if self._lost:
            return
        self.close_soon()
        if self._lost_waiter is None:
            self._lost_waiter = self._loop.create_future()
        await asyncio.shield(self._lost_waiter)

    def close_soon(self) -> None:
        """Begin the closing handshake (a close frame 1000, unless one was sent) and return: the
        server's close frame and its end of TCP are handled as they arrive, and the grace timer
        closes the transport if the server does not end it within CLOSE_GRACE seconds. Until
        then the socket is among those `finish_closes` waits for."""
        if self._lost:
            return
        _CLOSING.add(self)
        if not self._close_sent and self._code is None:
            self._send_close(1000)
        self._resume_reading()  # the server's close frame must get through
        self._arm_grace()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._upgrading:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._fail_upgrade(WireHandshakeError("the upgrade answer's head is too large"))
                return
            if end > MAX_HEAD:
                self._fail_upgrade(WireHandshakeError("the upgrade answer's head is too large"))
                return
            data = bytes(self._head[end + 4:])
            try:
                self._setup(parse_head(bytes(self._head[:end]), self._key, self._offered))
            except (WireStatusError, WireHandshakeError) as exc:
                self._fail_upgrade(exc)
                return
            self._head = bytearray()
            self._upgrading = False
            if self.upgraded.done():  # open_wire gave up (timeout) as the answer came
                return
            self.upgraded.set_result(None)
            if not data:
                return
        if self._code is not None:
            return  # closed or failed: whatever follows is ignored
        buf = self._buf
        if buf:
            buf += data
            self._parse(buf)
        else:
            self._parse(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        _CLOSING.discard(self)
        if self._code is None:
            self._code = 1006
        if not self.upgraded.done():
            self.upgraded.set_exception(
                WireHandshakeError("the connection ended before the upgrade answer")
            )
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for waiter in (self._waiter, self._drain_waiter, self._lost_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- internals ------------------------------------------------------------------------------

    def _setup(self, deflate: Deflate | None) -> None:
        """Make the compressor and decompressor the negotiated parameters call for."""
        self.deflate = deflate
        if deflate is None:
            return
        self._rsv_allowed = 0x40
        self._inflater = zlib.decompressobj(-deflate.server_max_window_bits)
        if deflate.client_no_context_takeover:  # a full flush also forgets the history
            self._flush_mode = zlib.Z_FULL_FLUSH

    def _new_deflater(self, deflate: Deflate) -> zlib._Compress:
        """The compressor, made on the first message worth compressing (most sockets send none)."""
        self._deflater = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -deflate.client_max_window_bits
        )
        return self._deflater

    def _fail_upgrade(self, exc: Exception) -> None:
        self._upgrading = False
        self._code = 1006  # nothing after a failed upgrade is read as frames
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        self.abort()

    def _parse(self, view: bytes | bytearray) -> None:
        """Take every complete frame off `view` (the received bytes); keep the rest in `_buf`."""
        pos, size = 0, len(view)
        while size - pos >= 2:
            b0, b1 = view[pos], view[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (view[start] << 8) | view[start + 1]
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(view[start:start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            if b1 & 0x80:
                self._fail(1002)
                return
            pos = end
            if not self._frame(b0, bytes(view[start:end])):
                return
        buf = self._buf
        if view is buf:
            if pos:
                del buf[:pos]
        elif pos < size:
            buf += view[pos:]

    def _frame(self, b0: int, payload: bytes) -> bool:
        """Handle one frame; False when the connection failed (stop parsing)."""
        opcode = b0 & 0x0F
        if OP_TEXT <= opcode <= OP_BINARY:
            if self._fragments is not None or b0 & 0x70 & ~self._rsv_allowed:
                return self._fail(1002)
            if not b0 & 0x80:
                self._fragments = [payload]
                self._fragmented_compressed = bool(b0 & 0x40)
                return True
            return self._deliver(payload, bool(b0 & 0x40))
        if opcode == OP_CONT:
            if self._fragments is None or b0 & 0x70:
                return self._fail(1002)
            self._fragments.append(payload)
            if not b0 & 0x80:
                return True
            whole = b"".join(self._fragments)
            self._fragments = None
            return self._deliver(whole, self._fragmented_compressed)
        if opcode < 8 or opcode > OP_PONG or not b0 & 0x80 or b0 & 0x70 or len(payload) > 125:
            return self._fail(1002)
        if opcode == OP_PING:
            if not self._close_sent and self._transport is not None:
                self._transport.write(frame(0x8A, payload))
            return True
        if opcode == OP_CLOSE:
            return self._closed_by_peer(payload)
        return True  # a pong: nothing to do

    def _deliver(self, payload: bytes, compressed: bool) -> bool:
        """Queue one complete data message (inflated if it was compressed)."""
        if compressed:
            inflater = self._inflater
            assert inflater is not None
            # One inflater serves every message, server_no_context_takeover or not: a server that
            # forgets its history between messages never refers back to it, so keeping ours is
            # always correct and saves a new inflater (and its window) per message. Only a message
            # that ends the deflate stream itself needs a new one (below).
            try:
                payload = inflater.decompress(payload + TAIL)
            except zlib.error:
                return self._fail(1007)
            if inflater.eof:  # the message ended its stream (a BFINAL block, RFC 7692 §7.2.3.3)
                assert self.deflate is not None
                self._inflater = zlib.decompressobj(-self.deflate.server_max_window_bits)
        messages = self._messages
        messages.append(payload)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(messages) > MAX_QUEUED and not self._paused_reading and self._transport is not None:
            self._paused_reading = True
            self._transport.pause_reading()
        return True

    def _closed_by_peer(self, payload: bytes) -> bool:
        """The server's close frame: echo it unless we sent one, then let the server end TCP."""
        if len(payload) == 1:
            return self._fail(1002)
        code = int.from_bytes(payload[:2], "big") if payload else 1005
        self._code = code
        if not self._close_sent:
            self._send_close(code if payload else 0)
        self._arm_grace()
        self._wake()
        return False

    def _fail(self, code: int) -> bool:
        """Fail the connection: send a close with `code` (unless one went), close TCP."""
        if self._code is None:
            self._code = code
        if not self._close_sent:
            self._send_close(code)
        if self._transport is not None:
            self._transport.close()
        self._wake()
        return False

    def _send_close(self, code: int) -> None:
        """Write a close frame carrying `code` (0: an empty close frame)."""
        self._close_sent = code or 1005
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(0x88, code.to_bytes(2, "big") if code else b""))

    def _arm_grace(self) -> None:
        """Close the transport ourselves if the server does not end TCP soon."""
        if self._grace is None and not self._lost:
            self._grace = self._loop.call_later(CLOSE_GRACE, self._end_grace)

    def _end_grace(self) -> None:
        self._grace = None
        if self._transport is not None:
            self._transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_reading(self) -> None:
        if self._paused_reading and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()

    def _closed_code(self) -> int:
        if self._code is not None:
            return self._code
        return self._close_sent or 1006

    async def _drain(self) -> None:
        if self._lost:
            raise WireClosed(self._closed_code())
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = self._loop.create_future()
        await self._drain_waiter
        if self._lost:
            raise WireClosed(self._closed_code())
