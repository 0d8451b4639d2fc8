"""Running one turn, whatever the upstream: continuation, accounts and failover, then the upstream
client (`conversations/upstreams.py`) starts the conversation and streams the answer events."""

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
from conversations.accounts import Account, AccountPool, state_for
from conversations.clock import CLIENT_PING_SECONDS, TurnClock  # noqa: F401 (their home was here)
from conversations.composer import ComposedPrompt, Limits
from conversations.drawing import with_images
from conversations.models import BING, ModelSpec
from conversations.pool import WarmPool
from conversations.sockets import SocketShelf
from conversations.threads import ChatThread, ConversationStore, Session, thread_key
from conversations.upstreams import client_for, client_named
from messagers.events import (
    AnswerEvent,
    AnswerOptions,
    ContentDelta,
    Finished,
    ReasoningDelta,
    Waiting,
)
from networks.http_client import CREATE_CONNECTIONS
from utils.errors import (
    ConversationUnusable,
    StreamInterrupted,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
)
from utils.settings import Settings

log = logging.getLogger(__name__)


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
    sockets: SocketShelf = field(default_factory=SocketShelf)  # opened ahead for pooled conversations

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
    """Run the turn until answer text (or reasoning), the end, or the hold deadline; raises ProxyError.

    Bing and Copilot report most failures inside the websocket within a second or two, so waiting
    for the first real event lets them reach the client with a real HTTP status.
    """
    events = run_turn(plan, upstream)
    head: list[AnswerEvent] = []
    try:
        async for event in events:
            head.append(event)
            if isinstance(event, (ContentDelta, ReasoningDelta, Finished, Waiting)):
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
    made_ahead = thread is not None  # the conversation was not created for this request
    tried: set[str] = set()
    failures, replaced = 0, False
    kind = plan.model.upstream
    while True:
        account = await pick_account(upstream, thread, tried, kind)
        if account is None:
            if thread is not None:  # its account cannot serve now: start fresh elsewhere
                thread = None
                continue
            raise upstream.accounts.unavailable_error(kind)
        failure: UpstreamError | None = None
        try:
            if thread is None:
                thread, made_ahead = await fresh_thread(plan, upstream, account, pooled=not replaced)
            async for event in run_on_thread(plan, upstream, thread):
                yield event
            return
        except StreamInterrupted as exc:
            failure = exc
            raise
        except UpstreamError as exc:
            failure = exc
            if stale_conversation(exc, made_ahead) and not replaced:
                # An expired or full conversation, or one made ahead that the upstream no longer
                # accepts: once, a freshly created one, free of charge. Only if that one is refused
                # too is it the account's cookies.
                replaced = True
                failure = exc if isinstance(exc, ConversationUnusable) else None
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


async def pick_account(
    upstream: Upstream, thread: ChatThread | None, tried: set[str], kind: str = BING
) -> Account | None:
    """The thread's own account (if its credentials are unchanged), else the least busy usable one
    of the upstream `kind`."""
    wait = upstream.settings.create_timeout
    if thread is None:
        return await upstream.accounts.acquire(tried, wait, upstream=kind)
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


def stale_conversation(error: UpstreamError, made_ahead: bool) -> bool:
    """Whether `error` may be the conversation's rather than the account's: expired or full, or an
    auth refusal of a conversation made ahead (pooled or continued), which Bing may have forgotten."""
    return isinstance(error, ConversationUnusable) or (made_ahead and isinstance(error, UpstreamAuthFailed))


async def fresh_thread(
    plan: TurnPlan, upstream: Upstream, account: Account, pooled: bool = True
) -> tuple[ChatThread, bool]:
    """A new conversation on `account`, history as context, and whether it was made ahead (from the
    account's warm pool, when it has one and `pooled`; else created now)."""
    client = client_for(plan.model)
    client.check_fresh(plan, upstream.settings)
    session = account.pool.take() if account.pool is not None and pooled else None
    made_ahead = session is not None
    session = session or await client.start_conversation(upstream, account)
    limit = client.turn_limit(session)
    thread = ChatThread(session, 0, limit, time.time(), account.name, account.fingerprint)
    return thread, made_ahead


async def create_session(upstream: Upstream, account: Account) -> Session:
    """Start a conversation on `account` through its upstream's client."""
    return await client_named(account.upstream).start_conversation(upstream, account)


def start_warm_pool(upstream: Upstream, account: Account) -> None:
    """Give `account` its pool of pre-created conversations (none when WARM_POOL_SIZE is 0)."""
    settings = upstream.settings
    if settings.warm_pool_size <= 0:
        return

    async def create_ahead() -> Session:
        if not account.usable(time.time()):  # a resting account is not asked for conversations
            raise UpstreamRateLimited(f"account {account.name} is {account.state.value}")
        try:
            session = await create_session(upstream, account)
        except UpstreamError as exc:
            await upstream.accounts.report(account, exc)  # shared with other instances (Redis)
            raise
        await client_named(account.upstream).prepare(upstream, account, session)
        return session

    async def discard(session: Session) -> None:
        await upstream.sockets.discard(session.conversation_id)

    account.pool = WarmPool(create_ahead, settings.warm_pool_size, settings.warm_pool_max_age, discard)
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


def run_attempt(plan: TurnPlan, upstream: Upstream, thread: ChatThread) -> AsyncGenerator[AnswerEvent, None]:
    """One attempt on `thread`: the model's upstream client's own event generator (handed on, not
    wrapped: every layer costs each event a resumption); it raises the turn's ProxyError."""
    owner = upstream.accounts.get(thread.account)
    return client_for(plan.model).send_turn(plan, upstream, thread, owner)
