"""Continuable Bing conversations, found by a hash of the exchange they produced.

A chat UI resends the whole history every turn. When a request's history is exactly an exchange this
service answered (same scope, model and messages, our answer included), the Bing conversation behind
it can be continued instead of recreated. Entries are taken, not read: two requests with the same
history can never share one conversation.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from conversations.composer import message_text
from networks.copilot import CopilotSession
from networks.http_client import SessionIds

Session = SessionIds | CopilotSession  # what an upstream's conversation start hands back


@dataclass(frozen=True, slots=True)
class ChatThread:
    """An upstream conversation (Bing or Copilot) that can take another turn."""

    session: Session
    turns: int  # user turns it has had
    limit: int | None  # maxNumUserMessagesInConversation (Bing) or remainingTurns at start (Copilot)
    created_at: float  # wall clock; Bing expires conversations after 6 h
    account: str = ""  # the account it belongs to ...
    fingerprint: str = ""  # ... and a digest of that account's cookies when it was created

    def usable(self, now: float, max_age: float, margin: int) -> bool:
        """Young enough, and not near its turn limit."""
        if now - self.created_at >= max_age:
            return False
        return self.limit is None or self.limit - self.turns > margin


class ConversationStore(Protocol):
    """Where continuable conversations wait for their next turn."""

    async def take(self, key: str) -> ChatThread | None:
        """Remove and return the thread stored under `key`, if any and not expired."""
        ...

    async def put(self, key: str, thread: ChatThread) -> None:
        """Store `thread` under `key`."""
        ...


class MemoryStore:
    """In-process LRU with a time-to-live; bounded by `max_entries`."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries, self.ttl = max_entries, ttl
        self._entries: OrderedDict[str, tuple[float, ChatThread]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def take(self, key: str) -> ChatThread | None:
        entry = self._entries.pop(key, None)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    async def put(self, key: str, thread: ChatThread) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = (time.monotonic(), thread)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def thread_key(scope: str, model: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """A digest of who asked, the model, and every message's role and text."""
    transcript = [
        (m.get("role"), message_text(m, i).strip(), m.get("tool_calls")) for i, m in enumerate(messages)
    ]
    try:
        digest = hashlib.sha256(orjson.dumps([scope, model, transcript]))
    except orjson.JSONEncodeError:  # unencodable text or absurd nesting: this chat just starts fresh
        return "unmatchable:" + secrets.token_hex(16)
    return digest.hexdigest()


def caller_scope(*parts: str) -> str:
    """An opaque scope from the account, the caller's key and user id (never stored in the clear)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
