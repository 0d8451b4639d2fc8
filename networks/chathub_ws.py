"""The ChatHub websocket: connect, SignalR handshake, send and receive with deadlines, close."""

from __future__ import annotations

import asyncio
import json
import logging
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from networks.headers import ORIGIN, USER_AGENT
from networks.ws_wire import WireClosed, WireHandshakeError, WireSocket, WireStatusError, open_wire
from utils.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamClosed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from utils.metrics import OPEN_SOCKETS

log = logging.getLogger(__name__)
# websockets logs request headers (the Cookie included) at DEBUG; its logger for our sockets never
# goes below INFO, however the root logger is configured.
WS_LOG = logging.getLogger("networks.chathub_ws.protocol")
WS_LOG.setLevel(logging.INFO)

RS = "\x1e"  # SignalR record separator
HANDSHAKE = '{"protocol":"json","version":1}' + RS
PING = '{"type":6}' + RS


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def chathub_url(base: str, access_token: str) -> str:
    """The socket URL with `sec_access_token` fully URL-encoded (`/`, `+`, `=` escaped)."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}sec_access_token={escape_all(access_token)}"


def escape_all(text: str) -> str:
    """`quote(text, safe='')`, by replacing each distinct reserved character of ASCII text (a token
    has a handful; `quote` makes a Python call per character of its several hundred)."""
    if not text.isascii():
        return quote(text, safe="")
    reserved = set(text) - _UNRESERVED
    if "%" in reserved:  # first, so that the escapes added below are not escaped again
        reserved.discard("%")
        text = text.replace("%", "%25")
    for char in reserved:
        text = text.replace(char, f"%{ord(char):02X}")
    return text


class Wire(Protocol):
    """What ChatHubSocket needs of a websocket connection: `networks.ws_wire.WireSocket` (the lean
    client) has it natively, `LibWire` over the websockets library. Both raise WireClosed."""

    @property
    def open(self) -> bool: ...

    async def send_text(self, text: str) -> None: ...

    async def recv(self) -> bytes: ...

    def buffered(self) -> bool: ...

    async def close(self) -> None: ...

    def abort(self) -> None: ...


class LibWire:
    """The websockets library's connection as a Wire (used when a proxy applies, or LEAN_WS=0)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise WireClosed(close_code(exc)) from exc

    async def recv(self) -> bytes:
        # Cancelling it loses nothing (websockets keeps the frames queued).
        try:
            return await self._ws.recv(decode=False)
        except ConnectionClosed as exc:
            raise WireClosed(close_code(exc)) from exc

    def buffered(self) -> bool:
        """Whether a frame has already arrived (websockets' receive queue)."""
        queue = getattr(getattr(self._ws, "recv_messages", None), "frames", None)
        return queue is not None and len(queue) > 0

    async def close(self) -> None:
        await self._ws.close()

    def abort(self) -> None:
        self._ws.transport.abort()


def close_code(exc: ConnectionClosed) -> int:
    """The peer's close code, as the lean client reports it (1006: no close frame came)."""
    return exc.rcvd.code if exc.rcvd is not None else 1006


class ChatHubSocket:
    """One websocket for one turn; `async with` opens it (with the handshake) and closes it.

    With `lean` (LEAN_WS) and no proxy it runs on the service's own websocket client
    (networks/ws_wire.py), else on the websockets library; both behave the same to callers."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        proxy: str | None,
        open_timeout: float,
        compression: bool = True,
        origin: str = ORIGIN,
        upstream_name: str = "Bing",
        signalr: bool = True,
        lean: bool = False,
    ) -> None:
        self._url, self._headers, self._proxy, self._open_timeout = url, headers, proxy, open_timeout
        self._compression, self._lean = compression, lean and proxy is None
        self._origin, self._name, self._signalr = origin, upstream_name, signalr
        self._ws: Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._greeting = ""  # the initial type 6 record, sent with the first message after the handshake
        self._released = False  # closed (or being closed) by its owner
        self._deadline = 0.0  # loop time when the `recv` in progress gives up
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[object] | None = None  # the task waiting in `recv`
        self._timed_out = False

    async def __aenter__(self) -> ChatHubSocket:
        if self._ws is not None:  # opened ahead (a warm socket): entering only takes ownership
            return self
        self._ws = await self._connect()
        OPEN_SOCKETS.inc()  # /metrics: bingapi_upstream_open_sockets
        if not self._signalr:  # Copilot's socket: plain JSON, no handshake
            return self
        try:
            await self._handshake(self._ws)
        except BaseException:
            self._release()
            self._ws.abort()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is None or self._released:
            return
        self._release()
        if kind is None or kind is GeneratorExit:
            if isinstance(self._ws, WireSocket):  # the lean client finishes the handshake by itself
                self._ws.close_soon()
                return
            try:
                async with asyncio.timeout(2):  # (no helper task, unlike wait_for)
                    await self._ws.close()
            except (TimeoutError, OSError):
                self._ws.abort()
        else:
            # Cancelled (the client left) or failed: drop the connection at once, without awaiting.
            self._ws.abort()

    def _release(self) -> None:
        """Count the socket as closed, once."""
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        OPEN_SOCKETS.dec()

    def is_open(self) -> bool:
        """Whether the socket is open and no close has begun."""
        return self._ws is not None and self._ws.open

    async def send(self, text: str) -> None:
        """Send one websocket text message (the first carries the initial ping record too: SignalR
        records are delimited by 0x1E, so one message may hold several, and it saves a write)."""
        assert self._ws is not None
        if self._greeting:
            text, self._greeting = self._greeting + text, ""
        try:
            await self._ws.send_text(text)
        except WireClosed as exc:
            raise closed_error(exc.code, self._name) from exc

    def buffered(self) -> bool:
        """Whether a message has already arrived, so `recv` will not wait."""
        return self._ws is not None and self._ws.buffered()

    async def recv(self, timeout: float) -> bytes | None:
        """The next message as raw bytes (undecoded: cheaper), or None after `timeout` seconds of none.

        The deadline lives in one timer per socket, re-armed only when it fires early or must move
        earlier, rather than an `asyncio.Timeout` per message: a frame that comes in time costs a
        float store. When it expires it cancels the wait (both clients allow that without losing data).
        """
        ws = self._ws
        assert ws is not None
        reader: asyncio.Task[object] | None = None
        if not ws.buffered():  # (a message already waiting needs no deadline and no task noted)
            loop = self._loop or self._bind_loop()
            deadline = self._deadline = loop.time() + max(timeout, 0)
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._on_deadline)
            reader = self._reader = asyncio.current_task(loop)
        try:
            return await ws.recv()
        except asyncio.CancelledError:
            if self._timed_out and reader is not None:
                self._timed_out = False
                if reader.uncancel() == 0:  # only our deadline cancelled it
                    return None
            raise
        except WireClosed as exc:
            raise closed_error(exc.code, self._name) from exc
        finally:
            self._reader = None

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """The socket's event loop, asked once (in 3.11 each ask is a getpid system call)."""
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _on_deadline(self) -> None:
        """The timer: cut the wait in progress if its deadline has passed, else re-arm for it."""
        self._timer = None
        reader = self._reader
        if reader is None:
            return  # nobody waits; the next `recv` arms the timer again
        loop = self._loop or self._bind_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._on_deadline)
            return
        self._timed_out = True
        reader.cancel()

    async def _connect(self) -> Wire:
        try:
            if self._lean:
                return await open_wire(
                    self._url,
                    self._headers,
                    origin=self._origin,
                    user_agent=USER_AGENT,
                    compression=self._compression,
                    open_timeout=self._open_timeout,
                )
            return LibWire(await connect(
                self._url,
                additional_headers=self._headers,
                origin=self._origin,  # type: ignore[arg-type]
                user_agent_header=USER_AGENT,
                proxy=self._proxy,
                open_timeout=self._open_timeout,
                compression="deflate" if self._compression else None,
                ping_interval=None,  # SignalR keeps itself alive with type 6 records (and Copilot
                # answers within the idle deadline)
                max_size=None,  # final frames can be large
                close_timeout=2,
                logger=WS_LOG,
            ))
        except InvalidStatus as exc:
            raise upgrade_error(exc.response.status_code, self._name) from exc
        except WireStatusError as exc:
            raise upgrade_error(exc.status, self._name) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Opening the {self._name} websocket took longer than {self._open_timeout:g} s."
            ) from exc
        except (InvalidHandshake, WireHandshakeError) as exc:
            raise UpstreamBadResponse(
                f"{self._name}'s websocket upgrade failed ({type(exc).__name__})."
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable(
                f"Could not reach {self._name}'s websocket ({type(exc).__name__})."
            ) from exc

    async def _handshake(self, ws: Wire) -> None:
        try:
            await ws.send_text(HANDSHAKE)
            async with asyncio.timeout(self._open_timeout):
                reply = await ws.recv()
        except TimeoutError as exc:
            raise UpstreamTimeout("Bing did not answer the websocket handshake.") from exc
        except WireClosed as exc:
            raise closed_error(exc.code) from exc
        error = handshake_error(reply.decode("utf-8", "replace"))
        if error:
            raise UpstreamClosed(f"Bing refused the websocket handshake: {error}.")
        self._greeting = PING


def handshake_error(reply: str) -> str | None:
    """None when the reply's first record is the accepting `{}`, else what went wrong."""
    try:
        first = json.loads(reply.split(RS, 1)[0])
    except ValueError:
        return "unreadable reply"
    if not isinstance(first, dict):
        return "unreadable reply"
    return str(first["error"]) if first.get("error") else None


def upgrade_error(status: int, name: str = "Bing") -> UpstreamError:
    """The error for an HTTP status that refused the websocket upgrade."""
    if status in (401, 403):
        return UpstreamAuthFailed(f"{name} refused the websocket (HTTP {status}): cookies or token rejected.")
    if status == 429:
        return UpstreamRateLimited(
            f"{name} rate-limited the websocket (HTTP 429).", headers={"Retry-After": "15"}
        )
    return UpstreamBadResponse(f"{name} refused the websocket upgrade with HTTP {status}.")


def closed_error(code: int, name: str = "Bing") -> UpstreamClosed:
    """The error for a socket that closed (with close `code`) before the turn ended."""
    return UpstreamClosed(f"{name} closed the websocket before the answer was complete (code {code}).")
