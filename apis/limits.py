"""Request limits in front of the routes: the body size cap (413) and the per-key rate limit (429).

Both are pure ASGI: a refused request is answered before its body is parsed, and inside the CORS
middleware so browsers can read the envelope.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apis.auth import supplied_key
from utils.errors import PayloadTooLarge, ProxyError, ServiceRateLimited
from utils.redis_client import SharedStateDown
from utils.settings import Settings

log = logging.getLogger(__name__)
MAX_BUCKETS = 10_000  # distinct callers remembered at once; the least recently seen go first
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
LIMITED_PATHS = ("/chat/completions", "/images/generations")  # what RATE_LIMIT_PER_MINUTE counts


def live_settings(scope: Scope, fallback: Settings) -> Settings:
    """The settings the app runs with (set in its lifespan), or those it was built with."""
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return settings if isinstance(settings, Settings) else fallback


async def send_error(scope: Scope, receive: Receive, send: Send, exc: ProxyError) -> None:
    """`exc` as its status and envelope."""
    await JSONResponse(exc.envelope(), exc.status, headers=exc.headers)(scope, receive, send)


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per caller: bursts of up to `per_minute`, refilled at `per_minute` a minute.

    Callers are opaque digests. A bucket idle for a minute is full again, the same as no bucket, so
    it is dropped; at most `max_buckets` are kept (least recently used dropped first).
    """

    def __init__(
        self, per_minute: int, *, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens a second
        self.max_buckets = max_buckets
        self.clock = clock
        self.buckets: OrderedDict[bytes, Bucket] = OrderedDict()

    def take(self, caller: bytes) -> float | None:
        """Spend one token for `caller`: None when allowed, else the seconds until one is back."""
        now = self.clock()
        self.evict_idle(now)
        bucket = self.buckets.pop(caller, None)
        capacity = float(self.per_minute)
        tokens = capacity
        if bucket is not None:
            tokens = min(capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        wait: float | None = None
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[caller] = Bucket(tokens, now)
        while len(self.buckets) > self.max_buckets:
            self.buckets.popitem(last=False)
        return wait

    def evict_idle(self, now: float) -> None:
        """Drop the buckets that have refilled completely (they are ordered by last use)."""
        refill = self.per_minute / self.rate
        while self.buckets:
            oldest = next(iter(self.buckets.values()))
            if now - oldest.updated < refill:
                break
            self.buckets.popitem(last=False)


class RequestLimits:
    """MAX_BODY_BYTES for every request with a body; RATE_LIMIT_PER_MINUTE for chat completions."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limiter: RateLimiter | None = None
        self.salt = os.urandom(16)  # caller digests mean nothing outside this process

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = live_settings(scope, self.settings)
        limit = settings.max_body_bytes
        length = declared_length(scope)
        if limit > 0 and length > limit:
            await send_error(scope, receive, send, too_large(limit))
            return
        if scope["method"] == "POST" and scope["path"].endswith(LIMITED_PATHS):
            refusal = await self.rate_limit(scope, settings)
            if refusal is not None:
                await send_error(scope, receive, send, refusal)
                return
        if limit > 0 and scope["method"] in BODY_METHODS and (length < 0 or is_chunked(scope)):
            # Only a body without a length needs counting: the HTTP server delivers exactly
            # Content-Length bytes, and that length was checked above.
            await CappedBody(self.app, limit)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def rate_limit(self, scope: Scope, settings: Settings) -> ServiceRateLimited | None:
        """The 429 for a caller over RATE_LIMIT_PER_MINUTE, or None (also when the limit is off)."""
        per_minute = settings.rate_limit_per_minute
        if per_minute <= 0:
            return None
        if self.limiter is None or self.limiter.per_minute != per_minute:
            self.limiter = RateLimiter(per_minute)
        keys = settings.api_key_list
        if keys:
            key = supplied_key(Request(scope)).encode()
            if not any(hmac.compare_digest(key, allowed.encode()) for allowed in keys):
                return None  # not a caller yet: the route answers 401
            caller, per = b"key\x00" + key, "API key"
        else:
            client = scope.get("client")
            caller, per = b"addr\x00" + (client[0] if client else "").encode(), "client address"
        wait = await self.take_token(scope, caller, per_minute)
        if wait is None:
            return None
        retry_after = max(1, math.ceil(wait))
        log.info("rate limit: a caller is over %d requests a minute", per_minute)
        return ServiceRateLimited(
            f"Rate limit of this proxy service exceeded: it allows {per_minute} chat completion "
            f"(and image) requests a minute per {per} (RATE_LIMIT_PER_MINUTE). Retry in {retry_after} s. "
            "This limit is set by the service's operator; it is not Bing's quota.",
            headers={
                "Retry-After": str(retry_after),
                "x-ratelimit-limit-requests": str(per_minute),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after}s",
            },
        )

    async def take_token(self, scope: Scope, caller: bytes, per_minute: int) -> float | None:
        """One token from the caller's bucket: shared through Redis when the app has it (and Redis
        answers), else this process's own."""
        shared = getattr(getattr(scope.get("app"), "state", None), "shared_limiter", None)
        if shared is not None:
            with contextlib.suppress(SharedStateDown):
                wait: float | None = await shared.take(caller, per_minute)
                return wait
        assert self.limiter is not None
        return self.limiter.take(hashlib.blake2b(caller, key=self.salt, digest_size=16).digest())


def declared_length(scope: Scope) -> int:
    """The Content-Length header as a number (-1 when absent or unreadable)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


def is_chunked(scope: Scope) -> bool:
    """Whether the request declares a Transfer-Encoding (its body's length is then not known)."""
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def too_large(limit: int) -> PayloadTooLarge:
    """The 413 for a body over MAX_BODY_BYTES; the connection closes, as the rest goes unread."""
    return PayloadTooLarge(
        f"The request body is larger than this service accepts ({limit} bytes, MAX_BODY_BYTES).",
        headers={"Connection": "close"},
    )


class CappedBody:
    """One request whose body is counted as it streams in (chunked uploads carry no length).

    Past the cap, reading stops, the 413 goes out at once, the app is told the client left, and
    whatever the app answers after that is dropped.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.started = False
        self.refused = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def capped_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        self.started = True
                        await send_error(scope, receive, send, too_large(self.limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not self.refused:
                raise
            log.debug("the app failed after its body was refused", exc_info=True)
