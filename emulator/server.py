"""BingEmulator: a keep-alive HTTP/1.1 server for create + stats, a websockets server for ChatHub.

Like real Bing (create on www.bing.com, ChatHub on sydney.bing.com) the two live on different
addresses: `http_port` serves create and stats with keep-alive; `port` serves the ChatHub websocket
and, for old URLs, still answers create and stats as one-shot HTTP (connection closed after each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, MutableSequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from . import copilot
from .chathub import IDLE_TIMEOUT as SOCKET_IDLE_TIMEOUT
from .chathub import ChatSession
from .create import CREATE_PATHS, HTML, handle_create, to_response
from .faults import Faults, cookie_flags
from .httpserver import IDLE_TIMEOUT, HttpReply, HttpRequest, KeepAliveServer
from .images import Creation, Upload, handle_images, is_image_path
from .state import ConnectionRecord, Conversation

log = logging.getLogger(__name__)

CHATHUB_PATH = "/sydney/ChatHub"
STATS_PATH = "/_emulator/stats"
CONVERSATIONS_PER_RECORD = 100  # conversations outlive the request records (see add_conversation)


class BingEmulator:
    """Emulates Bing's conversation-create endpoint and Sydney ChatHub on two loopback ports."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, http_port: int = 0,
                 http_idle_timeout: float = IDLE_TIMEOUT,
                 max_turns_signed_in: int = 30, max_turns_anonymous: int = 5,
                 conversation_ttl: float = 6 * 3600.0, words: int = 40,
                 words_per_update: int = 4, update_delay: float = 0.002, think: float = 0.0,
                 ping_interval: float = 5.0, close_wait: float = 5.0,
                 slow_seconds: float = 30.0, keep_records: int | None = None,
                 seed: int | None = None, image_ready_seconds: float = 0.2) -> None:
        """Configure the emulator; nothing listens until start().

        `port` is the ChatHub websocket port and `http_port` the keep-alive create/stats port
        (0 = any free port). `keep_records` caps `chat_requests` and `connections` to the newest N
        entries, and `conversations` to the newest 100 x N (None keeps everything, as tests need); the
        counters keep counting regardless. `seed` seeds `random`, which draws the fault rates
        (`faults.create_failure_rate` etc.), so a run's sequence of draws is reproducible.
        """
        if keep_records is not None and keep_records < 1:
            raise ValueError("keep_records must be at least 1 (or None)")
        self.host, self._requested_port = host, port
        self._http = KeepAliveServer(self._answer_http, host, http_port,
                                     idle_timeout=http_idle_timeout,
                                     on_connection=self._count_http_connection)
        self.max_turns_signed_in = max_turns_signed_in
        self.max_turns_anonymous = max_turns_anonymous
        self.conversation_ttl = conversation_ttl
        self.words, self.words_per_update = words, words_per_update
        self.update_delay, self.think = update_delay, think
        self.ping_interval, self.close_wait = ping_interval, close_wait
        self.socket_idle_timeout = SOCKET_IDLE_TIMEOUT  # a socket with no chat frame is closed after this
        self.faults = Faults(slow_seconds=slow_seconds)
        self.random = random.Random(seed)
        self.keep_records = keep_records
        self.create_count = 0
        self.chat_count = 0
        self.continued_chat_count = 0
        self.connection_count = 0
        self.http_connections = 0  # TCP connections accepted on http_port
        self.http_requests = 0  # requests answered on http_port
        #: Faults applied so far, by `create:NAME` / `chat:NAME` (`...:account:FLAG` for flags).
        self.fault_counts: Counter[str] = Counter()
        self.chat_requests: MutableSequence[dict[str, Any]] = _history(keep_records)
        self.connections: MutableSequence[ConnectionRecord] = _history(keep_records)
        self.conversations: dict[str, Conversation] = {}
        # Images (emulator/images.py): uploads by blob id, creations by request id, pictures by token.
        self.image_ready_seconds = image_ready_seconds
        self.upload_count = 0
        self.uploads: MutableSequence[Upload] = _history(keep_records)
        self.blobs: dict[str, Upload] = {}
        self.creations: MutableSequence[Creation] = _history(keep_records)
        self.creations_by_id: dict[str, Creation] = {}
        self.pictures: dict[str, bytes] = {}
        self.copilot_attachments: dict[str, Upload] = {}  # by the URL Copilot's upload answered
        # Copilot (PROTOCOL.md §7): its own conversations, requests and counters.
        self.copilot_start_count = 0
        self.copilot_chat_count = 0
        self.copilot_continued_chat_count = 0
        self.copilot_chat_requests: MutableSequence[dict[str, Any]] = _history(keep_records)
        self.copilot_conversations: dict[str, copilot.CopilotConversation] = {}
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
    def http_port(self) -> int:
        """Return the bound TCP port of the keep-alive HTTP server (after start)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._http.port

    @property
    def base_url(self) -> str:
        """Return http://HOST:PORT of the websocket port (create and stats answer there too)."""
        return f"http://{self.host}:{self.port}"

    @property
    def http_base_url(self) -> str:
        """Return http://HOST:HTTP_PORT of the keep-alive HTTP server."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def create_url(self) -> str:
        """Return the conversation-create URL (on the keep-alive HTTP server)."""
        return f"{self.http_base_url}/turing/conversation/create"

    @property
    def web_url(self) -> str:
        """Return the stand-in for https://www.bing.com (kblob, Image Creator, pictures)."""
        return self.http_base_url

    @property
    def stats_url(self) -> str:
        """Return the counters URL (on the keep-alive HTTP server)."""
        return f"{self.http_base_url}{STATS_PATH}"

    @property
    def chathub_url(self) -> str:
        """Return the ChatHub websocket URL (without the sec_access_token query)."""
        return f"ws://{self.host}:{self.port}{CHATHUB_PATH}"

    @property
    def copilot_url(self) -> str:
        """Return Copilot's base URL (start and conversations, on the keep-alive HTTP server)."""
        return self.http_base_url

    @property
    def copilot_ws_url(self) -> str:
        """Return Copilot's chat websocket URL (on the websocket port)."""
        return f"ws://{self.host}:{self.port}{copilot.CHAT_PATH}?api-version=2"

    async def start(self) -> BingEmulator:
        """Start listening."""
        self.stopping = False
        self._stop_event = asyncio.Event()
        server = await serve(
            self._handle, self.host, self._requested_port, process_request=self._process_request,
            open_timeout=None, ping_interval=None, max_size=2**25, close_timeout=2.0)
        try:
            await self._http.start()
        except BaseException:
            server.close()
            await server.wait_closed()
            raise
        self._server = server
        log.info("Bing emulator listening: create=%s stats=%s chathub=%s", self.create_url,
                 self.stats_url, self.chathub_url)
        return self

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        await self._http.stop()
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
                "connections": self.connection_count, "continued_chats": self.continued_chat_count,
                "copilot_starts": self.copilot_start_count, "copilot_chats": self.copilot_chat_count,
                "copilot_continued_chats": self.copilot_continued_chat_count}

    def record_chat(self, arg: dict[str, Any]) -> None:
        """Remember one chat frame's argument (capped by keep_records) and count it."""
        self.chat_requests.append(arg)
        self.chat_count += 1

    def add_conversation(self, conv: Conversation) -> None:
        """Register a conversation, dropping the oldest beyond CONVERSATIONS_PER_RECORD x keep_records.

        Bing keeps a conversation for hours, whoever else creates conversations meanwhile; the cap
        only bounds a long run's memory, far above what a client may hold (a pool, a store)."""
        self.conversations[conv.conversation_id] = conv
        if self.keep_records is not None:
            while len(self.conversations) > self.keep_records * CONVERSATIONS_PER_RECORD:
                del self.conversations[next(iter(self.conversations))]

    def expire_conversations(self) -> None:
        """Age every known conversation past conversation_ttl (next chat gets InvalidSession, or
        Copilot's `conversation-expired` error event)."""
        for conv in list(self.conversations.values()):
            conv.created_at -= self.conversation_ttl + 1
        for copilot_conv in list(self.copilot_conversations.values()):
            copilot_conv.created_at -= self.conversation_ttl + 1

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

    def _count_http_connection(self) -> None:
        """Count one TCP connection accepted on http_port."""
        self.http_connections += 1

    async def _answer_http(self, request: HttpRequest) -> HttpReply:
        """Answer one request on the keep-alive HTTP server."""
        self.http_requests += 1
        path = request.path
        if is_image_path(path):
            return await handle_images(self, request)
        if path in copilot.HTTP_PATHS:
            return await copilot.handle_http(self, request)
        if path != STATS_PATH and path not in CREATE_PATHS:
            return HttpReply(404, "", HTML)
        if request.method != "GET":
            return HttpReply(405, "", HTML, [("Allow", "GET")])
        return await self._route(path, request.header("cookie", "; "))

    async def _route(self, path: str, cookie: str) -> HttpReply:
        """Answer GET create or stats (the PATH must be one of them)."""
        if path == STATS_PATH:
            return HttpReply(200, json.dumps(self.stats()))
        return await handle_create(self, cookie)

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        """On the websocket port: let ChatHub upgrades through (unless faulted); answer old
        create/stats URLs as one-shot HTTP; 404 anything else."""
        path = urlsplit(request.path).path
        if path == STATS_PATH or path in CREATE_PATHS:
            cookie = "; ".join(request.headers.get_all("Cookie"))
            return to_response(connection, await self._route(path, cookie))
        if path == copilot.CHAT_PATH:
            status = copilot.upgrade_status(self, request.path, "; ".join(request.headers.get_all("Cookie")))
            if status is not None:
                return to_response(connection, HttpReply(status, "", HTML))
            return None
        if path.lower() == CHATHUB_PATH.lower():
            status = self.faults.take_upgrade()
            if status is not None:
                log.debug("chathub: rejecting upgrade with HTTP %d", status)
                return to_response(connection, HttpReply(status, "", HTML))
            return None
        return to_response(connection, HttpReply(404, "", HTML))

    async def _handle(self, ws: ServerConnection) -> None:
        """Run a ChatHub session on an accepted websocket."""
        target = urlsplit(ws.request.path if ws.request else "")
        query = parse_qs(target.query)
        cookie = "; ".join(ws.request.headers.get_all("Cookie")) if ws.request else ""
        if target.path == copilot.CHAT_PATH:
            token = (query.get("accessToken") or [""])[0]
            record = ConnectionRecord(token=token or None, flags=copilot.account_flags(cookie, token))
            self.connections.append(record)
            self.connection_count += 1
            await copilot.CopilotChat(self, ws, record).run()
            return
        tokens = query.get("sec_access_token")
        record = ConnectionRecord(token=tokens[0] if tokens else None, flags=cookie_flags(cookie))
        self.connections.append(record)
        self.connection_count += 1
        await ChatSession(self, ws, record).run()


def _history(keep: int | None) -> MutableSequence[Any]:
    """Return a list (keep everything) or a deque holding only the newest `keep` entries."""
    return [] if keep is None else deque(maxlen=keep)
