"""Graceful shutdown: on SIGTERM, requests in flight get SHUTDOWN_GRACE_SECONDS to finish.

uvicorn stops accepting connections at once and waits for the open ones. This module decides what
happens to the requests still running when the grace period is over:

- a stream ends with one in-band `server_shutting_down` error event and `data: [DONE]` (written by
  `apis.streaming.sse_body`), and its upstream socket is closed;
- a request whose response has not started gets a 503 `server_shutting_down` envelope.

How it works: the `Draining` middleware owns a `Drain` per app. A watcher task polls the uvicorn
server that owns the process's SIGTERM handler (uvicorn sets `should_exit` there) and starts the
drain. Every wait that must not outlive the grace period runs under `Drain.guard()`, an
`asyncio.Timeout` that has no deadline until the drain starts, and the grace deadline after it; the
guard turns its expiry into `ServerShuttingDown`.

sse-starlette's own response would cancel every open stream as soon as uvicorn begins to exit (a
quiet cut). The service's `AnswerStream` does not run that watcher, and sse-starlette's automatic
drain is switched off as well, so that no stream is ever cut that way; the streams end themselves.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apis.limits import live_settings, send_error
from utils.errors import ServerShuttingDown
from utils.settings import Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1  # uvicorn itself notices should_exit on a 0.1 s tick


class Drain:
    """One app's shutdown state: when the drain began and the guards still waiting."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.started: float | None = None  # loop time
        self.guards: set[Guard] = set()
        self.watcher: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """True once shutdown has begun."""
        return self.started is not None

    def deadline(self) -> float | None:
        """The loop time when the grace period ends (None while not draining)."""
        return None if self.started is None else self.started + self.grace

    def begin(self) -> None:
        """Start the grace period now (call it on the serving loop); idempotent."""
        if self.started is not None:
            return
        self.started = asyncio.get_running_loop().time()
        log.info("shutting down: requests in flight get %g s (SHUTDOWN_GRACE_SECONDS) to finish", self.grace)
        for guard in list(self.guards):
            guard.expire_at(self.deadline())

    def guard(self) -> Guard:
        """`async with drain.guard():` raises ServerShuttingDown when the grace period runs out."""
        return Guard(self)

    def error(self) -> ServerShuttingDown:
        """What a request cut by the shutdown is told."""
        return ServerShuttingDown(
            f"The server is shutting down and the request did not finish within the "
            f"{self.grace:g} s grace period (SHUTDOWN_GRACE_SECONDS). Retry it."
        )

    def watch(self) -> None:
        """Follow the uvicorn server of this process (main-thread loops only); idempotent."""
        if self.watcher is not None and not self.watcher.done():
            return
        if threading.current_thread() is not threading.main_thread():
            return  # uvicorn installs its signal handlers only from the main thread
        self.watcher = asyncio.get_running_loop().create_task(self.follow_uvicorn(), name="drain-watcher")

    async def follow_uvicorn(self) -> None:
        """Begin the drain when the uvicorn server starts to exit."""
        while not self.draining:
            server = uvicorn_server()
            if server is not None and server.should_exit:
                self.begin()
                return
            await asyncio.sleep(POLL_SECONDS)


class Guard:
    """One wait the drain may cut: nothing is armed until the drain begins (the common case costs a
    set insertion); then the wait's task is cancelled at the grace deadline, and the guard turns
    that cancellation into `ServerShuttingDown` (what `asyncio.Timeout` does, without a timer per
    wait while the server is not stopping). One task may enter the same guard again and again,
    one wait after another (a stream guards each of its waits with one guard)."""

    __slots__ = ("drain", "expired", "task", "timer")

    def __init__(self, drain: Drain) -> None:
        self.drain = drain
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False

    async def __aenter__(self) -> Guard:
        deadline = self.drain.deadline()
        if deadline is not None and deadline <= asyncio.get_running_loop().time():
            raise self.drain.error()
        if self.task is None:
            self.task = asyncio.current_task()
        self.drain.guards.add(self)
        if deadline is not None:
            self.expire_at(deadline)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.drain.guards.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.expired and self.task is not None:
            others = self.task.uncancel()  # the cancellations not ours (a client that left, say)
            if others == 0 and exc_type is asyncio.CancelledError:
                raise self.drain.error() from None

    def expire_at(self, when: float | None) -> None:
        """Move the deadline (None disarms the guard), unless the guard is already done."""
        if self.task is None or self.expired or self not in self.drain.guards:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if when is not None:
            self.timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.task is not None and self in self.drain.guards and not self.task.done():
            self.expired = True
            self.task.cancel()

    def release(self) -> None:
        """Stop guarding: from now on the drain never cuts this wait."""
        self.expire_at(None)
        self.drain.guards.discard(self)


class NoGuard:
    """The guard when no drain is in force (an app without the middleware, or a unit test)."""

    async def __aenter__(self) -> NoGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


NO_GUARD = NoGuard()
current_drain: ContextVar[Drain | None] = ContextVar("current_drain", default=None)


def drain_guard() -> Guard | NoGuard:
    """A guard on the current request's drain (set by the `Draining` middleware)."""
    drain = current_drain.get()
    return NO_GUARD if drain is None else drain.guard()


def uvicorn_server() -> Any:
    """The uvicorn Server whose `handle_exit` is this process's SIGTERM handler, if any."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return server if hasattr(server, "should_exit") else None


class Draining:
    """Give each request the grace period on shutdown; a response not started by then gets 503.

    Once a response has started (a stream), this middleware lets it run: the stream body guards
    its own waits and ends with an in-band error.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.drain = Drain(settings.shutdown_grace_seconds)
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]  # streams end themselves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        drain.grace = live_settings(scope, self.settings).shutdown_grace_seconds
        drain.watch()
        token = current_drain.set(drain)
        guard = drain.guard()
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                guard.release()
            await send(message)

        try:
            async with guard:
                await self.app(scope, receive, tracking_send)
        except ServerShuttingDown as exc:
            if started:
                log.warning("a response was cut by the shutdown after it started")
                return
            await send_error(scope, receive, send, exc)
        finally:
            current_drain.reset(token)
