"""A small pool of upstream conversations created ahead of need, so a first token skips the create trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from conversations.threads import Session
from utils.errors import UpstreamCaptcha, UpstreamError, UpstreamRateLimited

log = logging.getLogger(__name__)
BACKOFF_START, BACKOFF_MAX, QUOTA_BACKOFF = 1.0, 60.0, 600.0
# A take is a turn about to open its socket: its refill waits this long so that the create does not
# compete with that turn for the event loop before its first token.
REFILL_DELAY = 0.02


class WarmPool:
    """Keeps up to `size` fresh conversations; a background task refills and renews them."""

    def __init__(
        self,
        create: Callable[[], Awaitable[Session]],
        size: int,
        max_age: float,
        discard: Callable[[Session], Awaitable[None]] | None = None,
    ) -> None:
        self._create, self.size, self.max_age, self._discard = create, size, max_age, discard
        self._ready: deque[tuple[float, Session]] = deque()
        self._stale: list[Session] = []  # aged out, not yet discarded (its warm socket closed)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._ready)

    def start(self) -> None:
        """Begin filling in the background (nothing happens when size is 0)."""
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._fill(), name="warm-pool")

    async def stop(self) -> None:
        """Stop the background task; pooled conversations are forgotten (their warm sockets closed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._stale += [session for _, session in self._ready]
        self._ready.clear()
        await self._discard_stale()

    def take(self) -> Session | None:
        """A fresh pre-created conversation, or None when the pool is empty."""
        now = time.monotonic()
        while self._ready:
            created, session = self._ready.popleft()
            if now - created < self.max_age:
                self._wake.set()
                return session
            self._stale.append(session)
        self._wake.set()
        return None

    async def _fill(self) -> None:
        delay = BACKOFF_START
        while True:
            self._drop_old()
            await self._discard_stale()
            if len(self._ready) >= self.size:
                await self._sleep_until_needed()
                if len(self._ready) < self.size:  # a turn took one just now
                    await asyncio.sleep(REFILL_DELAY)
                continue
            try:
                session = await self._create()
            except UpstreamError as exc:
                wait = QUOTA_BACKOFF if isinstance(exc, (UpstreamRateLimited, UpstreamCaptcha)) else delay
                log.warning("warm pool: create failed (%s); retrying in %.0f s", exc.code, wait)
                await asyncio.sleep(wait)  # not woken by takes: a failing upstream is not hammered
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_START
            self._ready.append((time.monotonic(), session))

    def _drop_old(self) -> None:
        now = time.monotonic()
        while self._ready and now - self._ready[0][0] >= self.max_age:
            self._stale.append(self._ready.popleft()[1])

    async def _discard_stale(self) -> None:
        stale, self._stale = self._stale, []
        if self._discard is not None:
            for session in stale:
                await self._discard(session)

    async def _sleep_until_needed(self) -> None:
        oldest = self._ready[0][0] if self._ready else time.monotonic()
        await self._sleep(max(oldest + self.max_age - time.monotonic(), 0.01))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
