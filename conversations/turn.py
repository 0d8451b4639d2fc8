"""Running one turn against Bing: create, open the socket, send, translate frames to answer events."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from conversations.account_file import AccountWatcher
from conversations.accounts import Account, AccountPool, record_outcome, state_for
from conversations.composer import ComposedPrompt, Limits, check_context
from conversations.drawing import with_images
from conversations.models import ModelSpec
from conversations.pool import WarmPool
from conversations.request import build_chat_request
from conversations.threads import ChatThread, ConversationStore, thread_key
from conversations.vision import attach_image
from messagers.answer import AnswerState, advance, merge_deltas, start_answer
from messagers.events import (
    AnswerEvent,
    AnswerOptions,
    ContentDelta,
    Finished,
    Ignored,
    Ping,
    UpstreamFailure,
    Waiting,
)
from messagers.frames import encode_record, parse_message
from networks.chathub_ws import PING, ChatHubSocket, chathub_url
from networks.headers import chathub_headers
from networks.http_client import CREATE_CONNECTIONS, SessionIds, create_conversation
from utils.errors import (
    ConversationUnusable,
    StreamInterrupted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    interrupted,
)
from utils.proxy import pick_proxy
from utils.settings import Settings

log = logging.getLogger(__name__)
CLIENT_PING_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Everything one turn needs besides the network."""

    prompt: ComposedPrompt
    model: ModelSpec
    options: AnswerOptions
    limits: Limits
    scope: str  # who asks: account, caller key and user, hashed
    messages: tuple[Mapping[str, Any], ...]
    history_key: str | None  # the exchange this request extends, when it could be ours


@dataclass(slots=True)
class Upstream:
    """The process-wide upstream dependencies."""

    settings: Settings
    http: httpx.AsyncClient
    store: ConversationStore
    accounts: AccountPool
    watcher: AccountWatcher | None = None
    create_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CREATE_CONNECTIONS))

    async def refresh_accounts(self) -> None:
        """Adopt a changed accounts file: warm pools start for new accounts and stop for old ones."""
        if self.watcher is None:
            return
        added, removed = self.watcher.refresh()
        for account in added:
            start_warm_pool(self, account)
        for account in removed:
            if account.pool is not None:
                await account.pool.stop()


@dataclass(slots=True)
class Answer:
    """A turn whose first events are already in: `head`, then the rest of the live generator."""

    head: list[AnswerEvent]
    rest: AsyncGenerator[AnswerEvent, None]

    async def events(self) -> AsyncGenerator[AnswerEvent, None]:
        """Every event of the turn, once; closing this closes the upstream socket."""
        async with aclosing(self.rest) as rest:
            for event in self.head:
                yield event
            async for event in rest:
                yield event


async def open_answer(plan: TurnPlan, upstream: Upstream) -> Answer:
    """Run the turn until answer text, the final frame, or the hold deadline; raises ProxyError.

    Bing reports most failures inside the websocket within a second or two, so waiting for the
    first real event lets them reach the client with a real HTTP status.
    """
    events = run_turn(plan, upstream)
    head: list[AnswerEvent] = []
    try:
        async for event in events:
            head.append(event)
            if isinstance(event, (ContentDelta, Finished, Waiting)):
                break
    except BaseException:
        await events.aclose()
        raise
    return Answer(head, events)


async def run_turn(plan: TurnPlan, upstream: Upstream) -> AsyncGenerator[AnswerEvent, None]:
    """The turn's answer events, failing over between accounts until one answers.

    Our own conversation is continued when the request extends it. Before any text reaches the
    client, a failure is retried (bounded by FAILOVER_ATTEMPTS): an account-level one (throttled,
    captcha, cookies, blocked) on another account, a transient one after a short jittered pause, an
    expired or full conversation with a fresh one. After text, the failure goes to the client.
    """
    await upstream.refresh_accounts()
    thread = await claim_thread(plan, upstream)
    tried: set[str] = set()
    failures, replaced = 0, False
    while True:
        account = await pick_account(upstream, thread, tried)
        if account is None:
            if thread is not None:  # its account cannot serve now: start fresh elsewhere
                thread = None
                continue
            raise upstream.accounts.unavailable_error()
        failure: UpstreamError | None = None
        try:
            thread = thread or await fresh_thread(plan, upstream, account)
            async for event in run_on_thread(plan, upstream, thread):
                yield event
            return
        except StreamInterrupted as exc:
            failure = exc
            raise
        except UpstreamError as exc:
            failure = exc
            if isinstance(exc, ConversationUnusable) and not replaced:
                replaced = True  # an expired or full conversation: once, a fresh one, free of charge
            else:
                failures += 1
                if failures >= upstream.settings.failover_attempts:
                    raise
                await pause_before_failover(exc, account, tried, failures)
            thread = None
        finally:
            await upstream.accounts.release(account, failure)


async def pause_before_failover(
    error: UpstreamError, account: Account, tried: set[str], failures: int
) -> None:
    """Exclude an account with an account-level problem; pause (jittered) after a transient one."""
    log.info("turn failed on account %s before any text (%s); failing over", account.name, error.code)
    if state_for(error) is not None:
        tried.add(account.name)
    else:
        await asyncio.sleep(random.uniform(0.05, 0.2) * 2 ** (failures - 1))


async def pick_account(upstream: Upstream, thread: ChatThread | None, tried: set[str]) -> Account | None:
    """The thread's own account (if its cookies are unchanged), else the least busy usable one."""
    wait = upstream.settings.create_timeout
    if thread is None:
        return await upstream.accounts.acquire(tried, wait)
    owner = upstream.accounts.get(thread.account)
    if owner is None or owner.fingerprint != thread.fingerprint:
        return None
    return await upstream.accounts.acquire(set(), wait, name=thread.account)


async def run_on_thread(
    plan: TurnPlan, upstream: Upstream, thread: ChatThread
) -> AsyncGenerator[AnswerEvent, None]:
    """One attempt on `thread`, remembering the conversation when the answer completes."""
    parts: list[str] = []
    owner = upstream.accounts.get(thread.account)  # issue 6: Bing's image requests, drawn by this account
    cookies = owner.cookies if owner is not None else ""
    attempt = with_images(run_attempt(plan, upstream, thread), upstream.http, upstream.settings, cookies)
    async with aclosing(attempt) as events:
        async for event in events:
            if isinstance(event, ContentDelta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                await keep_thread(plan, upstream, thread, event, "".join(parts))
            yield event


async def claim_thread(plan: TurnPlan, upstream: Upstream) -> ChatThread | None:
    """Our conversation behind this request's history, if it can take another turn."""
    settings = upstream.settings
    if plan.history_key is None or not settings.continue_conversations:
        return None
    thread = await upstream.store.take(plan.history_key)
    if thread is None:
        return None
    if not thread.usable(time.time(), settings.conversation_max_age, settings.turn_limit_margin):
        return None
    return thread


async def fresh_thread(plan: TurnPlan, upstream: Upstream, account: Account) -> ChatThread:
    """A new conversation on `account` (from its warm pool when it has one), history as context."""
    check_context(plan.prompt, plan.limits)
    session = account.pool.take() if account.pool is not None else None
    session = session or await create_session(upstream, account.cookies)
    return ChatThread(session, 0, None, time.time(), account.name, account.fingerprint)


async def create_session(upstream: Upstream, cookies: str) -> SessionIds:
    """Create a conversation, queueing here rather than inside the HTTP client's pool."""
    async with upstream.create_slots:
        return await create_conversation(upstream.http, upstream.settings, cookies)


def start_warm_pool(upstream: Upstream, account: Account) -> None:
    """Give `account` its pool of pre-created conversations (none when WARM_POOL_SIZE is 0)."""
    settings = upstream.settings
    if settings.warm_pool_size <= 0:
        return

    async def create_ahead() -> SessionIds:
        if not account.usable(time.time()):  # a resting account is not asked for conversations
            raise UpstreamRateLimited(f"account {account.name} is {account.state.value}")
        try:
            return await create_session(upstream, account.cookies)
        except UpstreamError as exc:
            record_outcome(account, exc, time.time(), upstream.accounts.max_rest)
            raise

    account.pool = WarmPool(create_ahead, settings.warm_pool_size, settings.warm_pool_max_age)
    account.pool.start()


async def keep_thread(
    plan: TurnPlan, upstream: Upstream, thread: ChatThread, finished: Finished, content: str
) -> None:
    """Remember the conversation under the exchange it just produced, for the next turn."""
    if finished.reason != "stop" or not upstream.settings.continue_conversations:
        return
    counters = finished.throttling
    turns = counters.used if counters is not None else thread.turns + 1
    limit = counters.limit if counters is not None else thread.limit
    answered = [*plan.messages, {"role": "assistant", "content": content}]
    key = thread_key(plan.scope, plan.model.id, answered)
    await upstream.store.put(key, replace(thread, turns=turns, limit=limit))


async def run_attempt(
    plan: TurnPlan, upstream: Upstream, thread: ChatThread
) -> AsyncGenerator[AnswerEvent, None]:
    """One socket and chat invocation on `thread`; raises the turn's ProxyError."""
    settings, session = upstream.settings, thread.session
    owner = upstream.accounts.get(thread.account)
    cookies = owner.cookies if owner is not None else ""
    request = build_chat_request(plan.prompt, session, plan.model, settings.bing_locale, turn=thread.turns)
    if plan.prompt.image is not None:  # issue 6: vision input, uploaded with this account for this turn
        await attach_image(request, plan.prompt.image, upstream.http, settings, cookies)
    socket = ChatHubSocket(
        chathub_url(settings.bing_chathub_url, session.access_token),
        chathub_headers(cookies, settings.bing_locale),
        proxy=pick_proxy(settings.bing_chathub_url, settings),
        open_timeout=settings.connect_timeout,
        compression=settings.bing_ws_compression,
    )
    async with socket:
        await socket.send(encode_record(request))
        async for event in read_answer(socket, plan.options, settings):
            yield event


class TurnClock:
    """The deadlines of one turn: upstream idleness, the hold before streaming, pings to Bing."""

    def __init__(self, settings: Settings, now: float) -> None:
        self.idle = settings.upstream_idle_timeout
        self.last_frame = self.last_upstream_ping = now
        self.hold_until: float | None = now + settings.stream_hold_timeout

    def idle_expired(self, now: float) -> bool:
        """Bing has been silent for longer than UPSTREAM_IDLE_TIMEOUT."""
        return now - self.last_frame >= self.idle

    def hold_expired(self, now: float) -> bool:
        """True once, when the hold before streaming runs out with no answer text."""
        if self.hold_until is None or now < self.hold_until:
            return False
        self.hold_until = None
        return True

    def next_wait(self, now: float) -> float:
        """Seconds until something is due."""
        due = [
            self.last_frame + self.idle,
            max(self.last_frame, self.last_upstream_ping) + CLIENT_PING_SECONDS,
        ]
        if self.hold_until is not None:
            due.append(self.hold_until)
        return max(min(due) - now, 0.0)

    def upstream_ping_due(self, now: float) -> bool:
        """Time to ping a quiet Bing (and note that we did)."""
        if now - max(self.last_frame, self.last_upstream_ping) < CLIENT_PING_SECONDS:
            return False
        self.last_upstream_ping = now
        return True

    def saw(self, now: float, event: AnswerEvent | None = None) -> None:
        """A frame arrived (and `event` goes to the client); text ends the hold."""
        self.last_frame = now
        if isinstance(event, ContentDelta):
            self.hold_until = None


async def read_answer(
    socket: ChatHubSocket, options: AnswerOptions, settings: Settings
) -> AsyncGenerator[AnswerEvent, None]:
    """Frames to answer events until the turn is done, with idle and hold deadlines."""
    state = start_answer(options)
    clock = TurnClock(settings, time.monotonic())
    while not state.done:
        now = time.monotonic()
        if clock.idle_expired(now):
            raise_idle(state, settings)
        if clock.hold_expired(now):
            yield Waiting()
            continue
        try:
            raw = await socket.recv(clock.next_wait(now))
            if raw is None:
                if clock.upstream_ping_due(time.monotonic()):
                    await socket.send(PING)
                continue
            arrived = time.monotonic()
            clock.saw(arrived)
            state, out = await apply_message(socket, state, raw)
        except UpstreamError as exc:
            raise (interrupted(exc) if state.emitted else exc) from exc
        for event in out:
            if isinstance(event, UpstreamFailure):
                raise event.error
            clock.saw(arrived, event)
            yield event


async def apply_message(
    socket: ChatHubSocket, state: AnswerState, raw: bytes
) -> tuple[AnswerState, list[AnswerEvent]]:
    """Advance the state by every record of one message, echoing pings."""
    out: list[AnswerEvent] = []
    for upstream_event in parse_message(raw):
        if isinstance(upstream_event, Ping):
            await socket.send(PING)
        elif isinstance(upstream_event, Ignored):
            log.debug("ignored upstream %s", upstream_event.kind)
        else:
            state, more = advance(state, upstream_event)
            out += more
            if state.done:
                break
    return state, merge_deltas(out)


def raise_idle(state: AnswerState, settings: Settings) -> None:
    """Give up on a silent upstream: 504 before any content, in-band interruption after."""
    error = UpstreamTimeout(f"Bing sent nothing for {settings.upstream_idle_timeout:g} s.")
    raise interrupted(error) if state.emitted else error
