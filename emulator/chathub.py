"""One /sydney/ChatHub websocket: SignalR handshake, chat validation and answer streaming."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import frames
from .drawing import plan_draw, wants_drawing
from .faults import ACCOUNT_FLAGS, ERROR_FAULTS, Directives, account_fault, parse_directives
from .frames import Record
from .images import blob_of, describe
from .state import ConnectionRecord, Conversation
from .turns import DISENGAGED_AGAIN, Turn, TurnContext, plan_turn

if TYPE_CHECKING:
    from .server import BingEmulator

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
TONES = frozenset({"Creative", "Balanced", "Precise", "CreativeClassic"})
_CLOSED = object()
UNAUTHORIZED = ("UnauthorizedRequest", "The conversationSignature is not set or does not match. "
                "IsAuthenticated=False. App ID=")


class ChatSession:
    """Serve one ChatHub websocket connection."""

    def __init__(self, emu: BingEmulator, ws: ServerConnection, record: ConnectionRecord) -> None:
        """Bind the session to its emulator, socket and observable record."""
        self.emu, self.ws, self.record = emu, ws, record
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.we_closed = False
        self.sending = False
        self.sent_messages = 0

    async def run(self) -> None:
        """Run the session until the socket is closed by either side."""
        reader = asyncio.create_task(self._read())
        try:
            if await self._handshake():
                await self._serve()
            if not self.closed.is_set():
                await self._close()
        finally:
            await reader
            self.record.closed_at = self.record.closed_at or time.time()

    async def _read(self) -> None:
        """Feed incoming records into the inbox; note who closed the socket."""
        try:
            async for message in self.ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                for item in frames.split_records(text):
                    self.inbox.put_nowait(item)
        except ConnectionClosed:
            pass
        finally:
            if self.sending and not self.we_closed and not self.emu.stopping:
                self.record.closed_early_by_client = True
            self.record.closed_at = time.time()
            self.closed.set()
            self.inbox.put_nowait(_CLOSED)

    async def _next(self, timeout: float | None) -> Any:
        """Return the next incoming record, or None on timeout or closure."""
        try:
            item = await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            self.inbox.put_nowait(_CLOSED)
            return None
        return item

    async def _handshake(self) -> bool:
        """Expect {"protocol":"json","version":1}; answer {} or refuse."""
        first = await self._next(HANDSHAKE_TIMEOUT)
        while first == frames.PING:
            first = await self._next(HANDSHAKE_TIMEOUT)
        if not isinstance(first, dict):
            return False
        if "protocol" not in first:
            if first.get("type") == 4:
                await self._send([{"type": 7, "error": "Handshake was not completed.",
                                   "allowReconnect": False}])
            return False
        if first.get("protocol") != "json":
            protocol = first.get("protocol")
            await self._send([{"error": f"The protocol '{protocol}' is not supported."}])
            return False
        await self._send([{}])
        self.record.handshake_done = True
        return True

    async def _serve(self) -> None:
        """Handle chat invocations until the client leaves or a fault ends the socket."""
        wait = self.emu.socket_idle_timeout
        while True:
            item = await self._next(wait)
            if item is None:
                return
            if not isinstance(item, dict) or item.get("type") != 4:
                continue  # pings (type 6) and unknown record types are ignored
            invocation = str(item.get("invocationId", "0"))
            if item.get("target") != "chat":
                await self._send([{"type": 3, "invocationId": invocation,
                                   "error": f"Unknown hub method '{item.get('target')}'"}])
                continue
            if not await self._chat(item, invocation):
                return
            wait = self.emu.close_wait

    async def _chat(self, frame: Record, invocation: str) -> bool:
        """Answer one chat frame; return False when the socket is finished."""
        args = frame.get("arguments")
        arg = args[0] if isinstance(args, list) and args and isinstance(args[0], dict) else None
        if arg is None:
            return await self._send([{"type": 3, "invocationId": invocation, "error":
                                      "Failed to invoke 'chat' due to an error on the server."}])
        self.emu.record_chat(arg)
        self.record.chats += 1
        self.sending = True
        request_id = str(arg.get("requestId") or uuid.uuid4())
        conv, error = self._validate(arg)
        if error is not None or conv is None:
            return await self._fail(invocation, conv, request_id, *(error or UNAUTHORIZED))
        if arg.get("isStartOfSession") is False:
            self.emu.continued_chat_count += 1
        refused = account_fault(conv.flags | self.record.flags)
        if refused is not None:  # the account's cookie flags outrank every other fault
            self.record.fault = f"account:{refused}"
            self.emu.fault_counts[f"chat:{self.record.fault}"] += 1
            return await self._fail(invocation, conv, request_id, *ACCOUNT_FLAGS[refused])
        directives = parse_directives(str(arg["message"]["text"]))
        fault = (directives.fault or self.emu.faults.take_chat()
                 or self.emu.faults.roll_chat(self.emu.random))
        self.record.fault = fault
        if fault is not None:
            self.emu.fault_counts[f"chat:{fault}"] += 1
        log.debug("chat: invocation %s accepted (fault=%s)", invocation, fault)
        early = await self._early_fault(fault, invocation, conv, request_id)
        if early is not None:
            return early
        fault, throttling = self._count_turn(conv, fault)
        context = self._context(arg, conv, directives, throttling, request_id)
        if fault is None and "gencontentv3" in _list(arg, "optionsSets") and wants_drawing(
                context.prompt, directives):
            turn = plan_draw(context, directives)
        else:
            turn = plan_turn(context, fault)
        self.record.answer_text = turn.answer_text
        think = self.emu.think if directives.think is None else directives.think
        delay = self.emu.update_delay if directives.delay is None else directives.delay
        return await self._stream(turn, invocation, fault, think, delay)

    async def _early_fault(self, fault: str | None, invocation: str, conv: Conversation,
                           request_id: str) -> bool | None:
        """Handle faults that act before any answer text; None means stream the answer."""
        if fault in ERROR_FAULTS:
            value, message = ERROR_FAULTS[fault]
            if fault == "invalid_session":
                message = _expired_text(conv.conversation_id)
            return await self._fail(invocation, conv, request_id, value, message)
        if fault == "stall_start":
            await self.closed.wait()
            return False
        if fault == "close7_start":
            await self._send([frames.CLOSE7])
            await self._close()
            return False
        return None

    def _validate(self, arg: Record) -> tuple[Conversation | None, tuple[str, str] | None]:
        """Check signature, participant, expiry, tone and text like the server would."""
        conv = self.emu.conversations.get(str(arg.get("conversationId")))
        if conv is None or self.record.token != conv.encrypted_signature:
            return conv, UNAUTHORIZED
        participant = arg.get("participant")
        if not isinstance(participant, dict) or str(participant.get("id")) != conv.client_id:
            return conv, UNAUTHORIZED
        if time.time() - conv.created_at > self.emu.conversation_ttl:
            return conv, ("InvalidSession", _expired_text(conv.conversation_id))
        if arg.get("tone") not in TONES:
            return conv, ("InvalidRequest", "The tone is missing or not supported.")
        message = arg.get("message")
        if not isinstance(message, dict) or not str(message.get("text") or "").strip():
            return conv, ("InvalidRequest", "The message text is empty.")
        images = [message[key] for key in ("imageUrl", "originalImageUrl") if key in message]
        if any(blob_of(image) not in self.emu.blobs for image in images):
            return conv, ("InvalidRequest", "The imageUrl does not point at an image uploaded to "
                          "/images/kblob.")
        return conv, None

    def _count_turn(self, conv: Conversation, fault: str | None) -> tuple[str | None, Record]:
        """Apply turn counting; return the (possibly overridden) fault and throttling."""
        limit = self.emu.max_turns_signed_in if conv.signed_in else self.emu.max_turns_anonymous
        if conv.disengaged:
            fault = DISENGAGED_AGAIN
        elif fault == "turn_limit" or conv.turns >= limit:
            fault = "turn_limit"
        else:
            conv.turns += 1
        if fault == "disengaged":
            conv.disengaged = True
        used = limit if fault == "turn_limit" else conv.turns
        return fault, {"maxNumUserMessagesInConversation": limit,
                       "numUserMessagesInConversation": used,
                       "maxNumLongDocSummaryUserMessagesInConversation": 5,
                       "numLongDocSummaryUserMessagesInConversation": 0}

    def _context(self, arg: Record, conv: Conversation, directives: Directives,
                 throttling: Record, request_id: str) -> TurnContext:
        """Collect what the turn planner needs from the chat ARG."""
        options, previous = _list(arg, "optionsSets"), _list(arg, "previousMessages")
        context = sum(len(str(m.get("description") or "")) for m in previous
                      if isinstance(m, dict))
        allowed = arg.get("allowedMessageTypes")
        meta = {"conversationId": conv.conversation_id, "requestId": request_id,
                "conversationExpiryTime": frames.iso(conv.created_at + self.emu.conversation_ttl),
                "startTime": frames.iso()}
        upload = self.emu.blobs.get(blob_of(arg["message"].get("imageUrl")) or "")
        return TurnContext(arg=arg, prompt=str(arg["message"]["text"]), tone=str(arg["tone"]),
                           image=describe(upload) if upload is not None else None,
                           search="nosearchall" not in options, context_chars=context,
                           words=directives.words or self.emu.words,
                           chunk=directives.chunk or self.emu.words_per_update,
                           throttling=throttling, meta=meta,
                           allowed=frozenset(allowed) if isinstance(allowed, list) else None)

    async def _fail(self, invocation: str, conv: Conversation | None, request_id: str,
                    value: str, message: str) -> bool:
        """Send a failure final item (no messages) plus completion, in one message."""
        log.debug("chat: invocation %s answered with %s", invocation, value)
        item = frames.error_item(conv.conversation_id if conv else None, request_id, value, message)
        ok = await self._send(frames.final_records(invocation, item))
        self.sending = False
        return ok

    async def _stream(self, turn: Turn, invocation: str, fault: str | None, think: float,
                      delay: float) -> bool:
        """Stream a planned turn, then end it the way the fault says."""
        updates = turn.updates[:turn.cut] if fault in ("drop", "stall", "close7") else turn.updates
        if fault == "drop_start":
            updates = []
        if not (await self._send_all(turn.prelude, delay) and await self._think(think)
                and await self._send_all(updates, delay)):
            return False
        if fault in ("drop", "drop_start"):
            self.we_closed = True
            self.ws.transport.abort()
            return False
        if fault == "stall":
            await self.closed.wait()
            return False
        if fault in ("close7", "no_final"):
            if fault == "close7":
                await self._send([frames.CLOSE7])
            self.sending = False
            await self._close()
            return False
        ok = await self._send(frames.final_records(invocation, turn.item))
        self.record.completed = ok
        self.sending = False
        return ok

    async def _send_all(self, records: Sequence[Record | None], delay: float) -> bool:
        """Send records with `delay` between messages, packing 2-3 into every 5th message."""
        index = 0
        while index < len(records):
            size = 1
            if self.sent_messages % 5 == 4 and records[index] is not None:
                size = 2 + (self.sent_messages // 5) % 2
                while size > 1 and None in records[index:index + size]:
                    size -= 1
            batch = records[index:index + size]
            index += size
            if not await self._send([r for r in batch if r is not None]):
                return False
            await asyncio.sleep(delay)
        return True

    async def _send(self, records: list[Record]) -> bool:
        """Send one websocket message holding `records` (empty list = empty message)."""
        if self.closed.is_set():
            return False
        try:
            await self.ws.send(frames.encode(records))
        except ConnectionClosed:
            return False
        self.sent_messages += 1
        for record in records:
            text = frames.visible_text(record)
            if text is not None:
                self.record.sent_text = text
        return True

    async def _think(self, seconds: float) -> bool:
        """Wait `seconds` before the answer text, sending a type 6 ping every ping_interval."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            step = min(self.emu.ping_interval, remaining)
            try:
                await asyncio.wait_for(self.closed.wait(), step)
                return False
            except TimeoutError:
                pass
            if step >= self.emu.ping_interval and not await self._send([frames.PING]):
                return False
        return True

    async def _close(self) -> None:
        """Close the websocket normally (code 1000) from the emulator side."""
        self.we_closed = True
        await self.ws.close()


def _expired_text(conversation_id: str) -> str:
    """Return Bing's InvalidSession message for a conversation."""
    return (f"Conversation '{conversation_id}' doesn't exist or has expired. "
            "Conversations expire after 06:00:00.")


def _list(arg: Record, key: str) -> list[Any]:
    """Return ARG[key] if it is a list, else an empty list."""
    value = arg.get(key)
    return value if isinstance(value, list) else []
