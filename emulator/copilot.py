"""Copilot's chat websocket (PROTOCOL.md §7.3): /c/api/chat, plain JSON, with its failures.

`send` events in; `received`, `startMessage`, `chainOfThought` (reasoning mode), `appendText`,
`citation`, `done`, `suggestedFollowups` out, bent by the chat faults in `COPILOT_FAULTS` (plus
`drop`, `drop_start`, `stall`, `stall_start`). The HTTP side is in `copilot_start.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .copilot_start import (
    CONVERSATIONS_PATH,
    HTTP_PATHS,
    START_PATH,
    USER_PATH,
    CopilotConversation,
    account_flags,
    handle_http,
    upgrade_status,
)
from .drawing import image_prompt, wants_drawing
from .faults import parse_directives, strip_directives
from .images import describe, new_picture
from .state import ConnectionRecord
from .text import SUGGESTIONS, answer_text, prefixes, sources_for

if TYPE_CHECKING:
    from .server import BingEmulator

__all__ = ["CHAT_PATH", "CONVERSATIONS_PATH", "HTTP_PATHS", "START_PATH", "USER_PATH", "CopilotChat",
           "CopilotConversation", "account_flags", "handle_http", "upgrade_status"]

log = logging.getLogger(__name__)

CHAT_PATH = "/c/api/chat"
MODES = frozenset({"chat", "reasoning", "smart"})
HASHCASH_DIFFICULTY = 3
IDLE_TIMEOUT = 60.0
_CLOSED = object()


def check_hashcash(parameter: str, token: str) -> bool:
    """Whether sha256("<prefix>:<token>") starts with the challenge's count of hex zeros."""
    prefix, _, difficulty = parameter.rpartition(":")
    digest = hashlib.sha256(f"{prefix}:{token}".encode()).hexdigest()
    return token.isdigit() and digest.startswith("0" * int(difficulty))


def image_urls_of(frame: dict[str, Any]) -> list[str]:
    """The `url`s of a `send` event's image parts."""
    content = frame.get("content")
    parts = content if isinstance(content, list) else []
    return [str(p.get("url") or "") for p in parts if isinstance(p, dict) and p.get("type") == "image"]


def prompt_of(frame: dict[str, Any]) -> str:
    """The text parts of a `send` event's content."""
    content = frame.get("content")
    parts = content if isinstance(content, list) else []
    return "\n".join(str(p.get("text") or "") for p in parts
                     if isinstance(p, dict) and p.get("type") == "text")


class CopilotChat:
    """Serve one /c/api/chat websocket: `send` events in, Copilot events out."""

    def __init__(self, emu: BingEmulator, ws: ServerConnection, record: ConnectionRecord) -> None:
        """Bind the session to its emulator, socket and observable record."""
        self.emu, self.ws, self.record = emu, ws, record
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.sending = False
        self.we_closed = False
        self.prompt = ""  # the current turn's text
        self.drawing: str | None = None  # the picture this turn is asked for (emulator/drawing.py)

    async def run(self) -> None:
        """Answer `send` events until the socket closes."""
        reader = asyncio.create_task(self._read())
        try:
            await self._send({"event": "connected"})
            while (frame := await self._next(IDLE_TIMEOUT)) is not None:
                if frame.get("event") == "send" and not await self._turn(frame):
                    break
            if not self.closed.is_set():
                self.we_closed = True
                await self.ws.close()
        finally:
            await reader
            self.record.closed_at = self.record.closed_at or time.time()

    async def _read(self) -> None:
        """Feed incoming JSON objects into the inbox; note who closed the socket."""
        try:
            async for message in self.ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    self.inbox.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            if self.sending and not self.we_closed and not self.emu.stopping:
                self.record.closed_early_by_client = True
            self.record.closed_at = time.time()
            self.closed.set()
            self.inbox.put_nowait(_CLOSED)

    async def _next(self, timeout: float) -> dict[str, Any] | None:
        """The next frame from the client, or None on timeout or closure."""
        try:
            item = await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            self.inbox.put_nowait(_CLOSED)
            return None
        return item  # type: ignore[no-any-return]

    async def _send(self, event: dict[str, Any]) -> bool:
        """Send one event as one text message."""
        if self.closed.is_set():
            return False
        try:
            await self.ws.send(json.dumps(event, ensure_ascii=False))
        except ConnectionClosed:
            return False
        return True

    async def _turn(self, frame: dict[str, Any]) -> bool:
        """Answer one `send`; return False when the socket is finished."""
        self.emu.copilot_chat_requests.append(frame)
        self.emu.copilot_chat_count += 1
        self.record.chats += 1
        conv = self.emu.copilot_conversations.get(str(frame.get("conversationId")))
        prompt, mode = prompt_of(frame), frame.get("mode")
        if conv is not None and time.time() - conv.created_at > self.emu.conversation_ttl:
            return await self._send({"event": "error", "errorCode": "conversation-expired",
                                     "message": "This conversation has expired."})
        images = [self.emu.copilot_attachments.get(url) for url in image_urls_of(frame)]
        if conv is None or mode not in MODES or not prompt.strip() or None in images:
            problem = "conversation-not-found" if conv is None else "invalid-request"
            return await self._send({"event": "error", "errorCode": problem, "message": problem})
        if conv.turns:
            self.emu.copilot_continued_chat_count += 1
        directives = parse_directives(prompt)
        self.prompt = strip_directives(prompt)
        fault = self._fault(conv, directives.fault)
        await self._send({"event": "received"})
        early = await self._early_fault(fault)
        if early is not None:
            return early
        conv.turns += 1
        seen = images[0] if images else None
        text = answer_text(strip_directives(prompt), f"Copilot {mode}", False, 0,
                           directives.words or self.emu.words,
                           image=describe(seen) if seen is not None else None)
        self.drawing = image_prompt(prompt, directives) if wants_drawing(prompt, directives) else None
        self.record.answer_text = text
        delay = self.emu.update_delay if directives.delay is None else directives.delay
        return await self._answer(conv, str(mode), text, fault, directives.chunk or self.emu.words_per_update,
                                  delay)

    def _fault(self, conv: CopilotConversation, directive: str | None) -> str | None:
        """The account's flag (`captcha`: Cloudflare), else the prompt's, a switch's or a rate's."""
        if "captcha" in conv.flags | self.record.flags:
            fault: str | None = "cloudflare"
            self.record.fault = "account:captcha"
        else:
            fault = directive or self.emu.faults.take_chat() or self.emu.faults.roll_chat(self.emu.random)
            self.record.fault = fault
        if fault is not None:
            self.emu.fault_counts[f"chat:{self.record.fault}"] += 1
        return fault

    async def _early_fault(self, fault: str | None) -> bool | None:
        """Faults before any text; None means answer."""
        if fault == "error_event":
            return await self._send({"event": "error", "errorCode": "internal-error",
                                     "message": "Something went wrong. Please try again."})
        if fault == "cloudflare":
            await self._send({"event": "challenge", "method": "cloudflare", "parameter": ""})
            await self._wait_closed(IDLE_TIMEOUT)
            return False
        if fault == "hashcash":
            return None if await self._hashcash() else False
        if fault == "stall_start":
            self.sending = True
            await self.closed.wait()
            return False
        if fault == "drop_start":
            self.we_closed = True
            self.ws.transport.abort()
            return False
        return None

    async def _hashcash(self) -> bool:
        """Challenge the client; a right answer and the `send` again let the turn go on."""
        parameter = f"{secrets.token_hex(8)}:{HASHCASH_DIFFICULTY}"
        await self._send({"event": "challenge", "method": "hashcash", "parameter": parameter})
        reply = await self._next(IDLE_TIMEOUT)
        token = str(reply.get("token") or "") if reply and reply.get("event") == "challengeResponse" else ""
        if not check_hashcash(parameter, token):
            await self._send({"event": "error", "errorCode": "challenge-failed",
                              "message": "challenge failed"})
            return False
        self.emu.fault_counts["chat:hashcash_solved"] += 1
        again = await self._next(IDLE_TIMEOUT)
        return again is not None and again.get("event") == "send"

    async def _answer(self, conv: CopilotConversation, mode: str, text: str, fault: str | None,
                      chunk: int, delay: float) -> bool:
        """Stream the answer (reasoning first in `reasoning` mode), bent by a stream fault."""
        self.sending = True
        message_id = str(uuid.uuid4())
        await self._send({"event": "startMessage", "conversationId": conv.conversation_id,
                          "messageId": message_id})
        if mode == "reasoning":
            for thought in reasoning_steps(self.prompt):
                await self._send({"event": "chainOfThought", "messageId": message_id, "text": thought})
                await asyncio.sleep(delay)
        steps = prefixes(text, chunk)
        half = max(1, len(steps) // 2)
        sent = ""
        for index, step in enumerate(steps):
            if index == half:
                stop = await self._midway(conv, message_id, fault)
                if stop is not None:
                    return stop
            event = "replaceText" if fault == "replace" and index == half else "appendText"
            piece = step if event == "replaceText" else step[len(sent):]
            if not await self._send({"event": event, "messageId": message_id, "text": piece}):
                return False
            sent = step
            self.record.sent_text = sent
            await asyncio.sleep(delay)
        return await self._finish(conv, message_id, text, fault)

    async def _midway(self, conv: CopilotConversation, message_id: str, fault: str | None) -> bool | None:
        """Citations halfway; the mid-answer faults end the turn here (None: go on)."""
        for source in sources_for(conv.conversation_id, 2):
            await self._send({"event": "citation", "messageId": message_id, "title": source.title,
                              "url": source.url})
        if fault == "drop":
            self.we_closed = True
            self.ws.transport.abort()
            return False
        if fault == "stall":
            await self.closed.wait()
            return False
        if fault == "error_mid":
            await self._send({"event": "error", "errorCode": "internal-error", "message": "Lost the thread."})
            self.sending = False
            return True
        if fault == "no_done":
            self.sending = False
            self.we_closed = True
            await self.ws.close()
            return False
        return None

    async def _finish(self, conv: CopilotConversation, message_id: str, text: str, fault: str | None) -> bool:
        """An image if asked, the title on a first turn, then `done` and the follow-ups."""
        if fault == "image":
            url = f"https://copilot.example/emulator/images/{message_id}.png"
            await self._send({"event": "generatingImage", "messageId": message_id, "prompt": text[:40]})
            await self._send({"event": "imageGenerated", "messageId": message_id, "url": url,
                              "thumbnailUrl": url + "?w=256", "prompt": text[:40]})
        elif self.drawing is not None:  # a picture the client can fetch (emulator/images.py)
            url = new_picture(self.emu, self.drawing, 0)
            await self._send({"event": "generatingImage", "messageId": message_id, "prompt": self.drawing})
            await self._send({"event": "imageGenerated", "messageId": message_id, "url": url,
                              "thumbnailUrl": url, "prompt": self.drawing})
        if conv.turns == 1:
            await self._send({"event": "titleUpdate", "title": "Emulated conversation"})
        await self._send({"event": "partCompleted", "messageId": message_id})
        await self._send({"event": "done", "messageId": message_id})
        ok = await self._send({"event": "suggestedFollowups", "messageId": message_id,
                               "suggestions": list(SUGGESTIONS)})
        self.record.completed = ok
        self.sending = False
        return ok

    async def _wait_closed(self, timeout: float) -> None:
        """Wait for the client to close the socket (or the timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)


def reasoning_steps(prompt: str) -> list[str]:
    """Think Deeper's reasoning, in a few pieces (emulated, and never part of the answer)."""
    asked = " ".join(prompt.split())[-60:]
    return ["Reasoning (emulated): ", f"the user asks \"{asked}\". ", "I will answer plainly."]
