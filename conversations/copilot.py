"""The Copilot upstream (PROTOCOL.md §7): start over HTTP, then one plain-JSON websocket per turn.

Copilot has no system or context slot: a fresh conversation's first message carries the
instructions and earlier turns (within COPILOT_MAX_PROMPT_CHARS); a continued one gets only the new
message. A hashcash challenge is solved here, in a worker thread with a time budget; a Cloudflare
challenge fails the turn (503 `upstream_captcha_required`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import orjson

from conversations.accounts import Account
from conversations.clock import TurnClock, raise_idle
from conversations.composer import check_single_message, single_message
from conversations.models import COPILOT
from conversations.threads import ChatThread, Session
from conversations.vision import attach_copilot_image
from messagers.copilot import (
    CopilotChallenge,
    CopilotIgnored,
    CopilotState,
    advance_copilot,
    challenge_response,
    finish_copilot,
    parse_copilot_frame,
    send_event,
    start_copilot_answer,
)
from messagers.events import AnswerEvent, AnswerOptions, UpstreamFailure, Waiting
from networks.chathub_ws import ChatHubSocket
from networks.copilot import (
    CopilotSession,
    copilot_ws_url,
    merge_cookies,
    start_copilot_conversation,
)
from utils.errors import UpstreamBadResponse, UpstreamError, interrupted
from utils.hashcash import solve_hashcash
from utils.proxy import pick_proxy
from utils.settings import Settings

if TYPE_CHECKING:
    from conversations.turn import TurnPlan, Upstream

log = logging.getLogger(__name__)


class CopilotClient:
    """The Copilot implementation of `conversations.upstreams.UpstreamClient`."""

    name = COPILOT

    def check_fresh(self, plan: TurnPlan, settings: Settings) -> None:
        """The first message (instructions, history, prompt) must fit COPILOT_MAX_PROMPT_CHARS."""
        check_single_message(plan.prompt, plan.limits)

    async def start_conversation(self, upstream: Upstream, account: Account) -> Session:
        """POST /c/api/start (falling back to /c/api/conversations) with the account's credentials."""
        async with upstream.create_slots:
            return await start_copilot_conversation(
                upstream.http, upstream.settings, account.cookies, account.token
            )

    async def prepare(self, upstream: Upstream, account: Account, session: Session) -> None:
        """Nothing beyond the start: a Copilot socket is opened by the turn."""

    def turn_limit(self, session: Session) -> int | None:
        """The `remainingTurns` start reported, if it did."""
        return session.remaining_turns if isinstance(session, CopilotSession) else None

    async def send_turn(
        self, plan: TurnPlan, upstream: Upstream, thread: ChatThread, account: Account | None
    ) -> AsyncGenerator[AnswerEvent, None]:
        """One websocket and `send` event on `thread`; raises the turn's ProxyError."""
        settings, session = upstream.settings, thread.session
        if not isinstance(session, CopilotSession):
            raise UpstreamBadResponse(
                "A Copilot turn was asked to continue a conversation of another upstream."
            )
        text = single_message(plan.prompt) if thread.turns == 0 else plan.prompt.text
        sent = send_event(session.conversation_id, plan.model.mode, text)
        if plan.prompt.image is not None:  # issue 6: vision input, attached for this turn
            cookies = merge_cookies(account.cookies if account is not None else "", session.cookies)
            token = account.token if account is not None else ""
            await attach_copilot_image(sent, plan.prompt.image, upstream.http, settings, cookies, token)
        request = orjson.dumps(sent).decode()
        socket = copilot_socket(settings, account, session)
        async with socket:
            await socket.send(request)
            async for event in read_copilot_answer(socket, request, plan.options, settings):
                yield event


def copilot_socket(settings: Settings, account: Account | None, session: CopilotSession) -> ChatHubSocket:
    """The turn's websocket: the token in the query, the cookies (with those start set) in the header."""
    token = account.token if account is not None else ""
    cookies = merge_cookies(account.cookies if account is not None else "", session.cookies)
    return ChatHubSocket(
        copilot_ws_url(settings.copilot_ws_url, token),
        {"Cookie": cookies} if cookies else {},
        proxy=pick_proxy(settings.copilot_ws_url, settings),
        open_timeout=settings.connect_timeout,
        compression=settings.bing_ws_compression,
        origin=settings.copilot_url.rstrip("/"),
        upstream_name="Copilot",
        signalr=False,
        lean=settings.lean_ws,
    )


async def read_copilot_answer(
    socket: ChatHubSocket, request: str, options: AnswerOptions, settings: Settings
) -> AsyncGenerator[AnswerEvent, None]:
    """Frames to answer events until `done` (and the follow-ups, or the wait for them)."""
    state = start_copilot_answer(options)
    clock = TurnClock(settings, time.monotonic())
    followups_until: float | None = None
    while not state.over:
        now = time.monotonic()
        if state.done and followups_until is None:
            followups_until = now + settings.copilot_followups_wait
        if followups_until is not None and now >= followups_until:
            state, out = finish_copilot(state)
            for event in out:
                yield checked(event)
            return
        if clock.idle_expired(now):
            raise_idle(state.emitted, settings, "Copilot")
        if clock.hold_expired(now):
            yield Waiting()
            continue
        wait = clock.next_wait(now)
        if followups_until is not None:
            wait = min(wait, followups_until - now)
        try:
            state, out = await next_events(socket, state, request, settings, wait)
        except UpstreamError as exc:
            if state.done:  # the socket closed after `done`: the answer is whole
                followups_until = 0.0
                continue
            raise (interrupted(exc) if state.emitted else exc) from exc
        for event in out:
            clock.saw(time.monotonic(), checked(event))
            yield event


def checked(event: AnswerEvent) -> AnswerEvent:
    """The event, unless it is a failure: then its error is raised."""
    if isinstance(event, UpstreamFailure):
        raise event.error
    return event


async def next_events(
    socket: ChatHubSocket, state: CopilotState, request: str, settings: Settings, wait: float
) -> tuple[CopilotState, list[AnswerEvent]]:
    """Read one frame (or time out after `wait` s) and apply it; a hashcash challenge is answered."""
    raw = await socket.recv(wait)
    if raw is None:
        return state, []
    event = parse_copilot_frame(raw)
    if isinstance(event, CopilotChallenge) and event.method == "hashcash":
        await answer_hashcash(socket, event.parameter, request, settings)
        return state, []
    if isinstance(event, CopilotIgnored):
        log.debug("ignored Copilot event %s", event.kind)
    return advance_copilot(state, event)


async def answer_hashcash(socket: ChatHubSocket, parameter: str, request: str, settings: Settings) -> None:
    """Solve the proof of work off the event loop, answer it, and send the turn again."""
    started = time.monotonic()
    token = await asyncio.to_thread(solve_hashcash, parameter, settings.copilot_challenge_seconds)
    if token is None:
        raise UpstreamBadResponse(
            "Copilot's proof-of-work challenge was malformed or not solved within "
            f"{settings.copilot_challenge_seconds:g} s (COPILOT_CHALLENGE_SECONDS).",
            code="upstream_challenge_failed",
        )
    log.debug("solved a Copilot hashcash challenge in %.3f s", time.monotonic() - started)
    await socket.send(orjson.dumps(challenge_response("hashcash", token)).decode())
    await socket.send(request)
