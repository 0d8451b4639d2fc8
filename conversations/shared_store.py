"""The conversation store in Redis, for several workers or replicas (REDIS_URL).

The same contract as `MemoryStore`: an entry is *taken* (GETDEL, atomically, in one Lua script), so
two requests carrying one history never share a conversation, whichever instances they reach. The
store is bounded: CONVERSATION_STORE_SIZE entries across all instances (an index ordered by last
use drops the oldest) and CONVERSATION_STORE_TTL seconds per entry (a Redis expiry).

What an entry holds: the conversation id, and for Bing its client id and signatures (needed to
continue it), its turn counters, its creation time, the account's name and a digest of its
credentials. Never a prompt or an answer. A Copilot conversation also needs the cookies its start
set: they are stored encrypted (AES-GCM) under a key derived from the account's own credentials,
which Redis never sees. The key is a salted hash of the history digest.

When Redis is unreachable, entries go to (and come from) an in-process `MemoryStore`; a history whose
entry sits in the unreachable Redis simply starts a fresh conversation.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis

from conversations.accounts import Account, AccountPool
from conversations.models import BING, COPILOT
from conversations.threads import ChatThread, MemoryStore, Session
from networks.copilot import CopilotSession
from networks.http_client import SessionIds
from utils.redis_client import SharedRedis, SharedStateDown

TAKE = """
local value = redis.call('GETDEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return value
"""

# KEYS: the entry, the index (ordered by a put counter), the counter. ARGV: the value, ttl (ms), max entries.
# Index members whose entry expired are the oldest (one TTL for all), so they are dropped first.
PUT = """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), KEYS[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #oldest, 2 do redis.call('DEL', oldest[i]) end
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
"""


class RedisStore:
    """A `ConversationStore` shared through Redis, with an in-process fallback."""

    def __init__(self, shared: SharedRedis, max_entries: int, ttl: float, accounts: AccountPool) -> None:
        self.shared, self.max_entries, self.ttl, self.accounts = shared, max_entries, ttl, accounts
        self.local = MemoryStore(max_entries, ttl)
        self._take = shared.client.register_script(TAKE)
        self._put = shared.client.register_script(PUT)
        self.index = f"{shared.prefix}threads"

    async def take(self, key: str) -> ChatThread | None:
        """The thread under `key` from Redis (or, if not there, from the local fallback)."""
        try:
            raw = await self.shared.run(lambda r: self._take_raw(r, key))
        except SharedStateDown:
            raw = None
        thread = decode_thread(raw, self.secret) if isinstance(raw, bytes) else None
        return thread if thread is not None else await self.local.take(key)

    async def put(self, key: str, thread: ChatThread) -> None:
        """Store `thread` in Redis; in the local fallback while Redis is unreachable."""
        if self.max_entries <= 0:
            return
        value = encode_thread(thread, self.secret(thread.account))
        if value is None:  # its account is gone: only this process can hold it
            await self.local.put(key, thread)
            return
        ttl_ms = max(int(self.ttl * 1000), 1)
        try:
            await self.shared.run(
                lambda r: self._put(
                    keys=[self.shared.key("thread", key), self.index, f"{self.index}:serial"],
                    args=[value, ttl_ms, self.max_entries],
                    client=r,
                )
            )
        except SharedStateDown:
            await self.local.put(key, thread)

    def secret(self, name: str) -> bytes | None:
        """Key material for the cookies of a conversation of account `name` (None if it is gone)."""
        account = self.accounts.get(name)
        return account_secret(account) if account is not None else None

    async def _take_raw(self, client: Redis, key: str) -> Any:
        return await self._take(keys=[self.shared.key("thread", key), self.index], client=client)


def account_secret(account: Account) -> bytes:
    """What only the account's holders know: its upstream, cookies and token."""
    return f"{account.upstream}\x00{account.cookies}\x00{account.token}".encode()


def encode_thread(thread: ChatThread, secret: bytes | None) -> bytes | None:
    """A thread as the JSON stored in Redis: ids, signatures, counters, owner; cookies only encrypted
    with `secret` (None when a needed secret is missing)."""
    session = thread.session
    common = {"n": thread.turns, "l": thread.limit, "at": thread.created_at, "a": thread.account,
              "f": thread.fingerprint}  # fmt: skip
    if isinstance(session, SessionIds):
        ids = {"c": session.conversation_id, "i": session.client_id, "t": session.access_token,
               "s": session.signature}  # fmt: skip
        return orjson.dumps({"u": BING, **ids, **common})
    sealed = ""
    if session.cookies:
        if secret is None:
            return None
        sealed = seal(session.cookies, secret, thread.fingerprint)
    copilot = {"c": session.conversation_id, "k": sealed, "r": session.remaining_turns}
    return orjson.dumps({"u": COPILOT, **copilot, **common})


def decode_thread(raw: bytes, secret_of: Callable[[str], bytes | None]) -> ChatThread | None:
    """The stored JSON back as a thread; None for anything unreadable or undecryptable (that chat
    starts fresh)."""
    try:
        data = orjson.loads(raw)
        session = decode_session(data, secret_of)
        if session is None:
            return None
        limit = data["l"] if isinstance(data["l"], int) else None
        return ChatThread(session, int(data["n"]), limit, float(data["at"]), str(data["a"]), str(data["f"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidTag):
        return None


def decode_session(data: dict[str, Any], secret_of: Callable[[str], bytes | None]) -> Session | None:
    """The session part of a stored thread (raises KeyError, ValueError or InvalidTag when broken)."""
    if data.get("u", BING) == BING:
        return SessionIds(str(data["c"]), str(data["i"]), str(data["t"]), data["s"])
    cookies = ""
    if data["k"]:
        secret = secret_of(str(data["a"]))
        if secret is None:
            return None
        cookies = unseal(str(data["k"]), secret, str(data["f"]))
    remaining = data["r"] if isinstance(data["r"], int) else None
    return CopilotSession(str(data["c"]), cookies, remaining)


def seal(text: str, secret: bytes, context: str) -> str:
    """`text` encrypted and authenticated (AES-256-GCM, a fresh nonce) under a key from `secret`."""
    nonce = os.urandom(12)
    sealed = AESGCM(cookie_key(secret)).encrypt(nonce, text.encode(), context.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(value: str, secret: bytes, context: str) -> str:
    """The text `seal` encrypted; raises InvalidTag when the secret or context differ."""
    raw = base64.b64decode(value)
    return AESGCM(cookie_key(secret)).decrypt(raw[:12], raw[12:], context.encode()).decode()


def cookie_key(secret: bytes) -> bytes:
    """A 256-bit key for an account's conversation cookies, derived from its credentials."""
    return hashlib.sha256(b"bing-chat-api conversation cookies\x00" + secret).digest()
