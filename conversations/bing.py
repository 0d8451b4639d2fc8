"""The Bing ChatHub upstream: create over HTTP, one SignalR websocket per turn (PROTOCOL.md §1-4)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from conversations.accounts import Account
from conversations.clock import TurnClock, raise_idle
from conversations.composer import check_context
from conversations.models import BING
from conversations.request import build_chat_request
from conversations.sockets import settle
from conversations.threads import ChatThread, Session
from conversations.vision import attach_image
from messagers.answer import AnswerState, advance, merge_deltas, start_answer
from messagers.events import AnswerEvent, AnswerOptions, Ignored, Ping, UpstreamFailure, Waiting
from messagers.frames import encode_record, parse_message
from networks.chathub_ws import PING, ChatHubSocket, chathub_url
from networks.headers import chathub_headers
from networks.http_client import SessionIds, create_conversation
from utils.errors import UpstreamBadResponse, UpstreamError, interrupted
from utils.proxy import pick_proxy
from utils.settings import Settings

if TYPE_CHECKING:
    from conversations.turn import TurnPlan, Upstream

log = logging.getLogger(__name__)


class BingClient:
    """The ChatHub implementation of `conversations.upstreams.UpstreamClient`."""

    name = BING

    def check_fresh(self, plan: TurnPlan, settings: Settings) -> None:
        """Instructions and history travel in `previousMessages`, within MAX_CONTEXT_CHARS."""
        check_context(plan.prompt, plan.limits)

    async def start_conversation(self, upstream: Upstream, account: Account) -> Session:
        """GET /turing/conversation/create, queueing on the create slots (one per client connection)
        rather than inside the client."""
        async with upstream.create_slots:
            return await create_conversation(upstream.http, upstream.settings, account.cookies)

    async def prepare(self, upstream: Upstream, account: Account, session: Session) -> None:
        """Open the pooled conversation's socket ahead (WARM_SOCKETS): the turn that takes it sends
        at once. A failure here only means that turn opens its own socket."""
        if not upstream.settings.warm_sockets or not isinstance(session, SessionIds):
            return
        socket = chathub_socket(upstream.settings, session, account.cookies)
        try:
            await socket.__aenter__()
        except UpstreamError as exc:
            log.info("could not open a warm socket (%s)", exc.code)
            return
        upstream.sockets.put(session.conversation_id, socket)

    def turn_limit(self, session: Session) -> int | None:
        """Bing says its limit in the `throttling` counters of each answer, not at create."""
        return None

    async def send_turn(
        self, plan: TurnPlan, upstream: Upstream, thread: ChatThread, account: Account | None
    ) -> AsyncGenerator[AnswerEvent, None]:
        """One socket and chat invocation on `thread`; raises the turn's ProxyError."""
        settings, session = upstream.settings, thread.session
        if not isinstance(session, SessionIds):
            raise UpstreamBadResponse("A Bing turn was asked to continue a conversation of another upstream.")
        cookies = account.cookies if account is not None else ""
        request = build_chat_request(
            plan.prompt, session, plan.model, settings.bing_locale, turn=thread.turns
        )
        if plan.prompt.image is not None:  # issue 6: vision input, uploaded with this account for this turn
            await attach_image(request, plan.prompt.image, upstream.http, settings, cookies)
        record = encode_record(request)
        socket = await send_on_warm_socket(upstream, session, record) if thread.turns == 0 else None
        sent = socket is not None
        socket = socket or chathub_socket(settings, session, cookies)
        async with socket:  # opens it, unless it was opened ahead
            if not sent:
                await socket.send(record)
            async for event in read_answer(socket, plan.options, settings):
                yield event


def chathub_socket(settings: Settings, session: SessionIds, cookies: str) -> ChatHubSocket:
    """The (unopened) ChatHub socket of one conversation."""
    return ChatHubSocket(
        chathub_url(settings.bing_chathub_url, session.access_token),
        chathub_headers(cookies, settings.bing_locale),
        proxy=pick_proxy(settings.bing_chathub_url, settings),
        open_timeout=settings.connect_timeout,
        compression=settings.bing_ws_compression,
        lean=settings.lean_ws,
    )


async def send_on_warm_socket(upstream: Upstream, session: SessionIds, record: str) -> ChatHubSocket | None:
    """The socket opened ahead for this conversation with the invocation sent on it, or None (none
    was opened, or it died: the caller then opens a fresh one, invisibly to the client).

    The invocation goes out before anything else may run on the loop; only then does the turn wait
    for the socket's keeper to let go of it."""
    taken = upstream.sockets.take(session.conversation_id)
    if taken is None:
        return None
    socket, keeper = taken
    failure: BaseException | None = None
    sent = False
    try:
        if socket.is_open():
            await socket.send(record)
            sent = True
    except UpstreamError as exc:
        failure = exc
        log.info("a warm socket failed on send (%s); opening a fresh one", exc.code)
    try:
        await settle(keeper)
    except BaseException as exc:  # cancelled meanwhile (the client left): drop the socket
        await socket.__aexit__(type(exc), exc, None)
        raise
    if sent:
        return socket
    await socket.__aexit__(type(failure) if failure else None, failure, None)
    return None


async def read_answer(
    socket: ChatHubSocket, options: AnswerOptions, settings: Settings
) -> AsyncGenerator[AnswerEvent, None]:
    """Frames to answer events until the turn is done, with idle and hold deadlines."""
    state = start_answer(options)
    clock = TurnClock(settings, time.monotonic())
    while not state.done:
        now = time.monotonic()
        if clock.idle_expired(now):
            raise_idle(state.emitted, settings)
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
            while not state.done and socket.buffered():  # arrived together: one write to the client
                raw = await socket.recv(clock.next_wait(arrived))
                if raw is None:
                    break
                state, more = await apply_message(socket, state, raw)
                out = merge_deltas(out + more)
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
