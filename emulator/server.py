"""BingEmulator: one websockets server answering create (HTTP) and ChatHub (websocket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, MutableSequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .chathub import ChatSession
from .create import CREATE_PATHS, handle_create, reject_upgrade, respond
from .faults import Faults
from .state import ConnectionRecord, Conversation

log = logging.getLogger(__name__)

CHATHUB_PATH = "/sydney/ChatHub"
STATS_PATH = "/_emulator/stats"


class BingEmulator:
    """Emulates Bing's conversation-create endpoint and Sydney ChatHub on one loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 max_turns_signed_in: int = 30, max_turns_anonymous: int = 5,
                 conversation_ttl: float = 6 * 3600.0, words: int = 40,
                 words_per_update: int = 4, update_delay: float = 0.002, think: float = 0.0,
                 ping_interval: float = 5.0, close_wait: float = 5.0,
                 slow_seconds: float = 30.0, keep_records: int | None = None) -> None:
        """Configure the emulator; nothing listens until start().

        `keep_records` caps `chat_requests`, `connections` and `conversations` to the newest N
        entries (None keeps everything, as tests need); the counters keep counting regardless.
        """
        if keep_records is not None and keep_records < 1:
            raise ValueError("keep_records must be at least 1 (or None)")
        self.host, self._requested_port = host, port
        self.max_turns_signed_in = max_turns_signed_in
        self.max_turns_anonymous = max_turns_anonymous
        self.conversation_ttl = conversation_ttl
        self.words, self.words_per_update = words, words_per_update
        self.update_delay, self.think = update_delay, think
        self.ping_interval, self.close_wait = ping_interval, close_wait
        self.faults = Faults(slow_seconds=slow_seconds)
        self.keep_records = keep_records
        self.create_count = 0
        self.chat_count = 0
        self.continued_chat_count = 0
        self.connection_count = 0
        self.chat_requests: MutableSequence[dict[str, Any]] = _history(keep_records)
        self.connections: MutableSequence[ConnectionRecord] = _history(keep_records)
        self.conversations: dict[str, Conversation] = {}
        self.stopping = False
        self._server: Server | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """Return the bound TCP port (after start)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        """Return http://HOST:PORT."""
        return f"http://{self.host}:{self.port}"

    @property
    def create_url(self) -> str:
        """Return the conversation-create URL."""
        return f"{self.base_url}/turing/conversation/create"

    @property
    def chathub_url(self) -> str:
        """Return the ChatHub websocket URL (without the sec_access_token query)."""
        return f"ws://{self.host}:{self.port}{CHATHUB_PATH}"

    async def start(self) -> BingEmulator:
        """Start listening."""
        self.stopping = False
        self._stop_event = asyncio.Event()
        self._server = await serve(
            self._handle, self.host, self._requested_port, process_request=self._process_request,
            open_timeout=None, ping_interval=None, max_size=2**25, close_timeout=2.0)
        log.info("Bing emulator listening: create=%s chathub=%s", self.create_url,
                 self.chathub_url)
        return self

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        self._server.close()
        await self._server.wait_closed()
        log.debug("Bing emulator stopped")

    async def __aenter__(self) -> BingEmulator:
        """Start on entry."""
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        """Stop on exit."""
        await self.stop()

    def clear_faults(self) -> None:
        """Switch every fault off."""
        self.faults.clear()

    def stats(self) -> dict[str, int]:
        """Return the counters served at GET /_emulator/stats (they never drop with keep_records)."""
        return {"creates": self.create_count, "chats": self.chat_count,
                "connections": self.connection_count, "continued_chats": self.continued_chat_count}

    def record_chat(self, arg: dict[str, Any]) -> None:
        """Remember one chat frame's argument (capped by keep_records) and count it."""
        self.chat_requests.append(arg)
        self.chat_count += 1

    def add_conversation(self, conv: Conversation) -> None:
        """Register a conversation, dropping the oldest beyond keep_records."""
        self.conversations[conv.conversation_id] = conv
        if self.keep_records is not None:
            while len(self.conversations) > self.keep_records:
                del self.conversations[next(iter(self.conversations))]

    def expire_conversations(self) -> None:
        """Age every known conversation past conversation_ttl (next chat gets InvalidSession)."""
        for conv in list(self.conversations.values()):
            conv.created_at -= self.conversation_ttl + 1

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0,
                 interval: float = 0.01) -> bool:
        """Poll `predicate` from another thread until true or `timeout`; return its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return bool(predicate())
            time.sleep(interval)
        return True

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 5.0,
                             interval: float = 0.01) -> bool:
        """Like wait_for, but awaitable on the emulator's own loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return bool(predicate())
            await asyncio.sleep(interval)
        return True

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the emulator stops."""
        if self._stop_event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        """Route plain HTTP requests; let ChatHub upgrades through (unless faulted)."""
        path = urlsplit(request.path).path
        if path == STATS_PATH:
            return respond(connection, 200, json.dumps(self.stats()))
        if path in CREATE_PATHS:
            return await handle_create(self, connection, request)
        if path.lower() == CHATHUB_PATH.lower():
            status = self.faults.take_upgrade()
            if status is not None:
                log.debug("chathub: rejecting upgrade with HTTP %d", status)
                return reject_upgrade(connection, status)
            return None
        return respond(connection, 404, "", "text/html; charset=utf-8")

    async def _handle(self, ws: ServerConnection) -> None:
        """Run a ChatHub session on an accepted websocket."""
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        tokens = query.get("sec_access_token")
        record = ConnectionRecord(token=tokens[0] if tokens else None)
        self.connections.append(record)
        self.connection_count += 1
        await ChatSession(self, ws, record).run()


def _history(keep: int | None) -> MutableSequence[Any]:
    """Return a list (keep everything) or a deque holding only the newest `keep` entries."""
    return [] if keep is None else deque(maxlen=keep)
