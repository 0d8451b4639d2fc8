"""Bing sockets opened ahead for pooled conversations, so that a fresh turn skips the websocket
connect and the SignalR handshake as well as the create (WARM_SOCKETS).

A shelved socket is kept alive as a browser tab keeps its socket: it answers Bing's pings and pings
every 15 s. If Bing closes it, it is simply forgotten, and the turn that takes that conversation
opens a socket of its own.
"""

from __future__ import annotations

import asyncio
import logging

from networks.chathub_ws import PING, ChatHubSocket
from utils.errors import UpstreamError

log = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0


class SocketShelf:
    """Open, handshaken sockets keyed by conversation id, each with a keeper task."""

    def __init__(self) -> None:
        self._ready: dict[str, tuple[ChatHubSocket, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def put(self, key: str, socket: ChatHubSocket) -> None:
        """Shelve an open socket for the conversation `key`."""
        keeper = asyncio.create_task(self._keep(key, socket), name="warm-socket")
        self._ready[key] = (socket, keeper)

    def take(self, key: str) -> tuple[ChatHubSocket, asyncio.Task[None]] | None:
        """The socket shelved for `key` and its keeper, cancelled but maybe not yet finished: the
        caller may send at once (the invocation need not wait a loop turn), and must `settle` the
        keeper before it reads from the socket. None when nothing is shelved for `key`."""
        entry = self._ready.pop(key, None)
        if entry is not None:
            entry[1].cancel()
        return entry

    async def claim(self, key: str) -> ChatHubSocket | None:
        """The open socket shelved for `key` (now the caller's to use and close), or None."""
        taken = self.take(key)
        if taken is None:
            return None
        socket, keeper = taken
        await settle(keeper)
        if socket.is_open():
            return socket
        await close(socket)
        return None

    async def discard(self, key: str) -> None:
        """Close the socket shelved for `key`, if any (its conversation left the pool unused)."""
        socket = await self.claim(key)
        if socket is not None:
            await close(socket)

    async def close_all(self) -> None:
        """Close every shelved socket (shutdown)."""
        for key in list(self._ready):
            await self.discard(key)

    async def _keep(self, key: str, socket: ChatHubSocket) -> None:
        """Answer pings and ping every KEEPALIVE_SECONDS; forget the socket when Bing closes it."""
        try:
            while True:
                raw = await socket.recv(KEEPALIVE_SECONDS)
                if raw is None or b'"type":6' in raw:
                    await socket.send(PING)
        except UpstreamError as exc:
            log.info("a warm socket was closed by the upstream (%s)", exc.code)
            if self._ready.get(key, (None,))[0] is socket:
                del self._ready[key]
            await close(socket)


async def settle(keeper: asyncio.Task[None]) -> None:
    """Wait until a cancelled keeper has left the socket (without swallowing our own cancellation)."""
    if not keeper.done():
        await asyncio.wait([keeper])


async def close(socket: ChatHubSocket) -> None:
    """Close a socket we own, politely."""
    await socket.__aexit__(None, None, None)
