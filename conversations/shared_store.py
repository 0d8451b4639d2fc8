"""The conversation store in Redis, for several workers or replicas (REDIS_URL).

The same contract as `MemoryStore`: an entry is *taken* (GETDEL, atomically, in one Lua script), so
two requests carrying one history never share a conversation, whichever instances they reach. The
store is bounded: CONVERSATION_STORE_SIZE entries across all instances (an index ordered by last
use drops the oldest) and CONVERSATION_STORE_TTL seconds per entry (a Redis expiry).

What an entry holds: the Bing conversation id, client id and signatures (needed to continue it), its
turn counters, its creation time, the account's name and a digest of its cookies. Never a cookie,
a prompt or an answer. The key is a salted hash of the history digest.

When Redis is unreachable, entries go to (and come from) an in-process `MemoryStore`; a history whose
entry sits in the unreachable Redis simply starts a fresh conversation.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from conversations.threads import ChatThread, MemoryStore
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

    def __init__(self, shared: SharedRedis, max_entries: int, ttl: float) -> None:
        self.shared, self.max_entries, self.ttl = shared, max_entries, ttl
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
        thread = decode_thread(raw) if isinstance(raw, bytes) else None
        return thread if thread is not None else await self.local.take(key)

    async def put(self, key: str, thread: ChatThread) -> None:
        """Store `thread` in Redis; in the local fallback while Redis is unreachable."""
        if self.max_entries <= 0:
            return
        value = encode_thread(thread)
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

    async def _take_raw(self, client: Redis, key: str) -> Any:
        return await self._take(keys=[self.shared.key("thread", key), self.index], client=client)


def encode_thread(thread: ChatThread) -> bytes:
    """A thread as the JSON stored in Redis: ids, signatures, counters, owner; no cookies or text."""
    session = thread.session
    return orjson.dumps(
        {
            "c": session.conversation_id,
            "i": session.client_id,
            "t": session.access_token,
            "s": session.signature,
            "n": thread.turns,
            "l": thread.limit,
            "at": thread.created_at,
            "a": thread.account,
            "f": thread.fingerprint,
        }
    )


def decode_thread(raw: bytes) -> ChatThread | None:
    """The stored JSON back as a thread; None for anything unreadable (that chat starts fresh)."""
    try:
        data = orjson.loads(raw)
        session = SessionIds(str(data["c"]), str(data["i"]), str(data["t"]), data["s"])
        limit = data["l"] if isinstance(data["l"], int) else None
        return ChatThread(session, int(data["n"]), limit, float(data["at"]), str(data["a"]), str(data["f"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
