"""What a good direct Bing client does: create, ChatHub websocket, one type 4 chat, read to type 2.

The chat frame copies the shape of conversations/request.py (Balanced, search on) without importing
it, so this client stays independent of the proxy's code.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from benchmarks.httpraw import HttpError, RawHttp
from benchmarks.proxy_client import Outcome
from conversations.request import ALLOWED_MESSAGE_TYPES

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
PING = '{"type":6}' + RS
COOKIE = "_U=bench"
OPTIONS = ["nlu_direct_response_filter", "deepleo", "disable_emoji_spoken_text",
           "responsible_ai_policy_235", "enablemm", "dv3sugg", "autosave", "iyxapbing",
           "iycapbing", "galileo", "saharagenconv5"]
ALLOWED = list(ALLOWED_MESSAGE_TYPES)  # the same types the proxy asks for, for a fair comparison
SEARCH_PLUGIN = {"id": "c310c353-b9f0-4d76-ab0d-1dd5e979cf68", "category": 1}
FAILURES = (TimeoutError, OSError, HttpError, ValueError, KeyError, asyncio.IncompleteReadError,
            WebSocketException, InvalidHandshake)


@dataclass(slots=True)
class Conversation:
    """A created conversation; `turns` is the next invocationId."""

    conversation_id: str
    client_id: str
    token: str
    signature: str | None
    turns: int = 0


class DirectClient:
    """A direct Bing client against the emulator: ChatHub on HOST:PORT, create on HOST:CREATE_PORT."""

    def __init__(self, host: str, port: int, timeout: float, create_port: int | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.create_port = port if create_port is None else create_port
        self._idle: list[RawHttp] = []  # kept-alive create connections, as any pooled client has

    async def ask(self, prompt: str) -> Outcome:
        """Create a conversation and ask once; TTFT counts from before the create."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                conv = await self.create()
                return await self.turn(conv, prompt, started)
        except FAILURES as exc:
            return Outcome(ok=False, error=type(exc).__name__)

    async def chat(self, prompts: list[str]) -> Outcome:
        """One conversation, continued turn after turn (isStartOfSession false after the first)."""
        ttfts: list[float] = []
        try:
            async with asyncio.timeout(self.timeout * len(prompts)):
                conv: Conversation | None = None
                for prompt in prompts:
                    started = time.perf_counter()
                    conv = conv or await self.create()
                    result = await self.turn(conv, prompt, started)
                    if not result.ok:
                        return Outcome(ok=False, ttfts=ttfts, requests=len(prompts),
                                       error=result.error)
                    ttfts += result.ttfts
        except FAILURES as exc:
            return Outcome(ok=False, ttfts=ttfts, requests=len(prompts), error=type(exc).__name__)
        return Outcome(ok=True, ttfts=ttfts, requests=len(prompts))

    async def create(self) -> Conversation:
        """GET /turing/conversation/create: ids from the body, the token from the headers."""
        http = self._idle.pop() if self._idle else RawHttp(self.host, self.create_port)
        try:
            await http.send("GET", "/turing/conversation/create", {
                "Cookie": COOKIE, "Accept": "application/json"})
            head = await http.read_head()
            body: dict[str, Any] = orjson.loads(await http.read_all(head))
        except BaseException:
            await http.close()
            raise
        if head.keep_alive:
            self._idle.append(http)
        else:
            await http.close()
        if head.status != 200 or (body.get("result") or {}).get("value") != "Success":
            raise HttpError(f"create failed: HTTP {head.status}")
        return Conversation(body["conversationId"], body["clientId"],
                            head.headers["x-sydney-encryptedconversationsignature"],
                            head.headers.get("x-sydney-conversationsignature"))

    async def turn(self, conv: Conversation, prompt: str, started: float) -> Outcome:
        """Open the socket, handshake, send the chat frame, read updates to the final, close."""
        url = (f"ws://{self.host}:{self.port}/sydney/ChatHub"
               f"?sec_access_token={quote(conv.token, safe='')}")
        async with connect(url, additional_headers={"Cookie": COOKIE},
                           origin="https://www.bing.com",  # type: ignore[arg-type]
                           ping_interval=None, max_size=None, open_timeout=self.timeout,
                           close_timeout=2) as ws:
            await ws.send(HANDSHAKE)
            if not str(await ws.recv()).startswith("{}"):
                return Outcome(ok=False, error="handshake refused")
            await ws.send(PING)
            await ws.send(orjson.dumps(chat_frame(conv, prompt)).decode() + RS)
            conv.turns += 1
            return await read_answer(ws, started)


async def read_answer(ws: ClientConnection, started: float) -> Outcome:
    """Emit deltas of the cumulative bot text until the type 2 final (or a type 3/7)."""
    text, message_id, ttft = "", None, None
    async for message in ws:
        for piece in str(message).split(RS):
            if not piece:
                continue
            record: dict[str, Any] = orjson.loads(piece)
            kind = record.get("type")
            if kind == 1 and record.get("target") == "update":
                bot = _bot_message(record)
                if bot is None:
                    continue
                if bot.get("messageId") != message_id:
                    text, message_id = "", bot.get("messageId")
                new = str(bot.get("text") or "")
                if len(new) > len(text) and new.startswith(text):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                text = new
            elif kind == 6:
                await ws.send(PING)
            elif kind == 2:
                value = ((record.get("item") or {}).get("result") or {}).get("value")
                ok = value == "Success" and ttft is not None
                return Outcome(ok=ok, ttfts=[ttft] if ttft is not None else [], text=text,
                               error=None if ok else f"final {value}")
            elif kind in (3, 7):
                return Outcome(ok=False, error=f"type {kind} before the final")
    return Outcome(ok=False, error="socket closed before the final")


def _bot_message(record: dict[str, Any]) -> dict[str, Any] | None:
    """The visible bot answer message of an update, if it carries one."""
    messages = (record.get("arguments") or [{}])[0].get("messages") or []
    if messages and messages[0].get("author") == "bot" and messages[0].get("messageType") is None:
        found: dict[str, Any] = messages[0]
        return found
    return None


def chat_frame(conv: Conversation, prompt: str) -> dict[str, Any]:
    """The type 4 chat invocation; later turns continue the same conversation."""
    request_id = str(uuid.uuid4())
    argument: dict[str, Any] = {
        "source": "cib", "optionsSets": OPTIONS, "allowedMessageTypes": ALLOWED, "sliceIds": [],
        "verbosity": "verbose", "scenario": "SERP", "plugins": [SEARCH_PLUGIN],
        "traceId": uuid.uuid4().hex,
        "conversationHistoryOptionsSets": ["autosave", "savemem", "uprofupd", "uprofgen"],
        "gptId": "copilot", "isStartOfSession": conv.turns == 0, "requestId": request_id,
        "message": {"author": "user", "inputMethod": "Keyboard", "text": prompt,
                    "messageType": "Chat", "requestId": request_id, "messageId": request_id,
                    "locale": "en-US", "market": "en-US", "region": "US",
                    "timestamp": datetime.now(UTC).astimezone().isoformat(timespec="seconds")},
        "tone": "Balanced", "spokenTextMode": "None", "conversationId": conv.conversation_id,
        "participant": {"id": conv.client_id},
    }
    if conv.signature:
        argument["conversationSignature"] = conv.signature
    return {"arguments": [argument], "invocationId": str(conv.turns), "target": "chat", "type": 4}
