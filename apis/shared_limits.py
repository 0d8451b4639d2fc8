"""RATE_LIMIT_PER_MINUTE shared by every instance through Redis: one atomic token bucket per caller.

The bucket is the same as the in-process one (apis/limits.py): bursts of up to N requests, refilled
at N a minute. Here it lives in a Redis hash updated by one Lua script, on Redis's clock, under a
salted hash of the caller (never the key or address itself), and expires once it would be full.
"""

from __future__ import annotations

from utils.redis_client import SharedRedis

# KEYS[1]: the bucket. ARGV: capacity, tokens per ms. Returns -1 (allowed) or the wait in ms.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = capacity
if bucket[1] then
  tokens = math.min(capacity, tonumber(bucket[1]) + (now - tonumber(bucket[2])) * rate)
end
local wait = -1
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate))
return wait
"""


class SharedRateLimiter:
    """Token buckets in Redis; `take` raises SharedStateDown when Redis cannot be used."""

    def __init__(self, shared: SharedRedis) -> None:
        self.shared = shared
        self._take = shared.client.register_script(TAKE)

    async def take(self, caller: bytes, per_minute: int) -> float | None:
        """Spend one of `caller`'s tokens: None when allowed, else the seconds until one is back."""
        keys = [self.shared.key("rate", caller)]
        args = [per_minute, per_minute / 60_000]
        wait = await self.shared.run(lambda r: self._take(keys=keys, args=args, client=r))
        return None if int(wait) < 0 else int(wait) / 1000
