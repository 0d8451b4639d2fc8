"""The shared Redis connection (REDIS_URL) and whether it can be used right now.

Every command goes through `SharedRedis.run`. A Redis or socket failure marks Redis down and raises
`SharedStateDown`, which callers answer with their in-process fallback. While Redis is down, `run`
raises at once, so requests never wait for a timeout each; a background probe pings Redis every
REDIS_PROBE_SECONDS and brings it back when it answers. Keys are prefixed and hashed with a salt
kept in Redis itself, so no API key, client address or history appears in a key name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from utils.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
FAILURES = (RedisError, OSError, TimeoutError)
_CREDENTIALS = re.compile(r"//[^@/\s]*@")


class SharedStateDown(Exception):
    """Redis cannot be used now; the caller falls back to in-process state."""


class SharedRedis:
    """One Redis client per process, with a health flag, a probe task and salted key names."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set")
        self.client: Redis = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_connect_timeout,
            socket_timeout=settings.redis_socket_timeout,
            # One retry, for a connection Redis closed while it sat in the pool; none for timeouts,
            # so a stalled Redis costs one REDIS_SOCKET_TIMEOUT before the fallback.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.prefix = settings.redis_key_prefix
        self.probe_seconds = max(settings.redis_probe_seconds, 0.05)
        self.up = False
        self.reason: str | None = "not connected yet"
        self.since = time.time()
        self.salt = b""
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect once (a failure only leaves Redis marked down) and start the probe."""
        await self.check()
        if self._probe is None:
            self._probe = asyncio.create_task(self._probe_forever(), name="redis-probe")

    async def close(self) -> None:
        """Stop the probe and close the connections."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        with contextlib.suppress(*FAILURES):
            await self.client.aclose()

    async def run(self, call: Callable[[Redis], Awaitable[T]]) -> T:
        """`call(client)`, or SharedStateDown when Redis is down or fails now."""
        if not self.up:
            raise SharedStateDown(self.reason or "redis is down")
        try:
            return await call(self.client)
        except FAILURES as exc:
            self.mark_down(exc)
            raise SharedStateDown(self.reason or "redis is down") from exc

    def key(self, kind: str, raw: str | bytes) -> str:
        """The Redis key for `raw` (an identity or digest), salted and hashed: never `raw` itself."""
        data = raw.encode() if isinstance(raw, str) else raw
        return f"{self.prefix}{kind}:{hashlib.blake2b(data, key=self.salt, digest_size=20).hexdigest()}"

    async def check(self) -> bool:
        """Ping Redis and (re)load the shared salt; True when it is usable."""
        salt_key = f"{self.prefix}salt"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(salt_key, os.urandom(32), nx=True)
                pipe.get(salt_key)
                _, salt = await pipe.execute()
        except FAILURES as exc:
            self.mark_down(exc)
            return False
        if not isinstance(salt, bytes) or not salt:
            self.mark_down(RedisError("the shared salt could not be read"))
            return False
        self.salt = salt  # a restarted, empty Redis gets a new salt; every instance adopts it here
        if not self.up:  # connections pooled before the outage are dead: drop them
            with contextlib.suppress(*FAILURES):
                await self.client.connection_pool.disconnect(inuse_connections=False)
        self.mark_up()
        return True

    def mark_down(self, exc: BaseException) -> None:
        """Remember why Redis failed; logged once per outage."""
        reason = describe(exc)
        if self.up or self.reason != reason:
            log.warning("redis unreachable (%s): using in-process state until it answers", reason)
        if self.up:
            self.since = time.time()
        self.up, self.reason = False, reason

    def mark_up(self) -> None:
        """Redis answers again."""
        if not self.up:
            log.info("redis reachable: shared state in use")
            self.up, self.reason, self.since = True, None, time.time()

    def status(self) -> dict[str, Any]:
        """The /health view: reachable or not, since when, and why not (never the URL)."""
        return {
            "backend": "redis",
            "status": "ok" if self.up else "unreachable",
            "reason": self.reason,
            "since": self.since,
        }

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_seconds)
            await self.check()


def describe(exc: BaseException) -> str:
    """A short reason for an outage, with any credentials in it removed."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {_CREDENTIALS.sub('//***@', text)}"[:200]
