"""Waking requests that wait for a busy account when another instance frees a slot.

Every release of a slot publishes on one Redis channel (cheap: Redis only forwards it). Each instance
listens on it and, when requests wait, wakes one per message (the oldest first), which then tries to
take the slot. A short poll covers what no message announces (a crashed instance's lease running out, a
message lost while Redis was away).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time

from utils.redis_client import FAILURES, SharedRedis

log = logging.getLogger(__name__)
FALLBACK_POLL_SECONDS = 0.25


class FreedSlots:
    """A per-instance listener for freed slots, and the queue of requests that wait for one.

    Waiters are woken in ticket order: their place in the queue shared by all instances (see
    `shared_accounts.CLAIM`), so the request woken here is the one Redis lets through.
    """

    def __init__(self, shared: SharedRedis) -> None:
        self.shared = shared
        self.channel = f"{shared.prefix}slot-freed"
        self.generation = 0  # counts freed-slot messages: a waiter that saw it move retries at once
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap: ticket, arrival
        self._arrivals = itertools.count()  # ties (a queue restarted with Redis) never compare futures
        self._listener: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Begin listening in the background."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="slot-listener")

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def wait(self, deadline: float, seen: int, ticket: int) -> bool:
        """Wait for a freed slot (or a poll tick) unless one was announced since `seen`; False once
        `deadline` (monotonic) has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if self.generation != seen:
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (ticket, next(self._arrivals), woken)
        heapq.heappush(self._queue, entry)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, FALLBACK_POLL_SECONDS)):
                    await woken
        finally:
            if not woken.done() or woken.cancelled():  # a timeout cancels the future: still queued
                with contextlib.suppress(ValueError):
                    self._queue.remove(entry)
                    heapq.heapify(self._queue)
        return True

    def announce(self) -> None:
        """A slot came free: wake the waiting request with the oldest ticket, if any."""
        self.generation += 1
        while self._queue:
            _, _, woken = heapq.heappop(self._queue)
            if not woken.done():
                woken.set_result(None)
                return

    async def _listen_forever(self) -> None:
        while True:
            if not self.shared.up:
                await asyncio.sleep(self.shared.probe_seconds)
                continue
            try:
                await self._listen()
            except FAILURES as exc:
                log.debug("slot listener interrupted (%s)", type(exc).__name__)
                await asyncio.sleep(self.shared.probe_seconds)

    async def _listen(self) -> None:
        async with self.shared.client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            while self.shared.up:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self.announce()
