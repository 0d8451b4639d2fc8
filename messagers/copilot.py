"""Copilot's plain-JSON websocket (PROTOCOL.md §7.3): frames → Copilot events → answer events (pure).

Unlike ChatHub, `appendText` carries an incremental delta, one JSON object per websocket message,
with no record separator. The state is a value passed in and returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from messagers.answer import inline_blocks, split_new_text
from messagers.events import (
    AnswerEvent,
    AnswerOptions,
    Citation,
    ContentDelta,
    Finished,
    Image,
    ImageGenerated,
    ReasoningDelta,
    Source,
    Suggestions,
    UpstreamFailure,
)
from utils.errors import (
    COPILOT_CLOUDFLARE_HELP,
    ConversationUnusable,
    UpstreamBadResponse,
    UpstreamCaptcha,
    UpstreamError,
    interrupted,
)

# --- Copilot events: one server frame becomes zero or one of these. ---


@dataclass(frozen=True, slots=True)
class CopilotText:
    """`appendText` (a delta) or, with `replace`, `replaceText` (the message's text so far)."""

    text: str
    replace: bool = False


@dataclass(frozen=True, slots=True)
class CopilotReasoning:
    """`chainOfThought`: Think Deeper's reasoning."""

    text: str


@dataclass(frozen=True, slots=True)
class CopilotCitation:
    source: Source


@dataclass(frozen=True, slots=True)
class CopilotImage:
    image: Image


@dataclass(frozen=True, slots=True)
class CopilotSuggestions:
    suggestions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CopilotDone:
    """The answer is finished (suggested follow-ups may still follow)."""


@dataclass(frozen=True, slots=True)
class CopilotChallenge:
    """`challenge`: `hashcash` is solved by the client; `cloudflare` needs a browser."""

    method: str
    parameter: str


@dataclass(frozen=True, slots=True)
class CopilotError:
    message: str
    code: str = ""  # `errorCode` (or `code`) when the event has one


@dataclass(frozen=True, slots=True)
class CopilotIgnored:
    kind: str


CopilotEvent = (
    CopilotText
    | CopilotReasoning
    | CopilotCitation
    | CopilotImage
    | CopilotSuggestions
    | CopilotDone
    | CopilotChallenge
    | CopilotError
    | CopilotIgnored
)

_GONE = ("not-found", "notfound", "expired")  # error codes that mean the conversation is gone
_IGNORED = frozenset(
    {
        "connected",
        "received",
        "startMessage",
        "titleUpdate",
        "partCompleted",
        "generatingImage",
        "partialImageGenerated",
    }
)


def send_event(conversation_id: str, mode: str, text: str) -> dict[str, Any]:
    """The client's `send` event for one turn's text."""
    return {
        "event": "send",
        "conversationId": conversation_id,
        "mode": mode,
        "content": [{"type": "text", "text": text}],
    }


def challenge_response(method: str, token: str) -> dict[str, Any]:
    """The client's answer to a challenge."""
    return {"event": "challengeResponse", "method": method, "token": token}


def parse_copilot_frame(raw: str | bytes) -> CopilotEvent:
    """The event in one websocket message; junk and unknown events become `CopilotIgnored`."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return CopilotIgnored("unreadable")
    if not isinstance(frame, dict):
        return CopilotIgnored("not an object")
    kind = str(frame.get("event") or "")
    parse = _PARSERS.get(kind)
    if parse is not None:
        return parse(frame)
    if kind in _IGNORED:
        return CopilotIgnored(kind)
    return CopilotIgnored(f"unknown event {kind[:40]!r}")


def _text(frame: dict[str, Any], key: str = "text") -> str:
    value = frame.get(key)
    return value if isinstance(value, str) else ""


def _error(frame: dict[str, Any]) -> CopilotEvent:
    code = next((str(frame[k]) for k in ("errorCode", "code") if isinstance(frame.get(k), str)), "")
    for key in ("message", "error", "errorCode", "code"):
        value = frame.get(key)
        if isinstance(value, str) and value:
            return CopilotError(value[:300], code[:80])
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return CopilotError(value["message"][:300], code[:80])
    return CopilotError("no details", code[:80])


def _suggestions(frame: dict[str, Any]) -> CopilotEvent:
    items = frame.get("suggestions")
    items = items if isinstance(items, list) else []
    texts = [i if isinstance(i, str) else i.get("text") if isinstance(i, dict) else None for i in items]
    return CopilotSuggestions(tuple(t for t in texts if isinstance(t, str) and t))


def _image(frame: dict[str, Any]) -> CopilotEvent:
    thumbnail = frame.get("thumbnailUrl")
    prompt = frame.get("prompt")
    return CopilotImage(
        Image(
            _text(frame, "url"),
            thumbnail if isinstance(thumbnail, str) else None,
            prompt if isinstance(prompt, str) else None,
        )
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], CopilotEvent]] = {
    "appendText": lambda f: CopilotText(_text(f)),
    "replaceText": lambda f: CopilotText(_text(f), replace=True),
    "chainOfThought": lambda f: CopilotReasoning(_text(f)),
    "citation": lambda f: CopilotCitation(Source(_text(f, "title"), _text(f, "url"))),
    "imageGenerated": _image,
    "suggestedFollowups": _suggestions,
    "done": lambda f: CopilotDone(),
    "challenge": lambda f: CopilotChallenge(_text(f, "method"), _text(f, "parameter")),
    "error": _error,
}


# --- The answer state machine. ---


@dataclass(frozen=True, slots=True)
class CopilotState:
    """What has been told to the client so far."""

    options: AnswerOptions
    raw: str = ""  # the answer text sent (what `replaceText` corrects)
    emitted: int = 0  # characters of content and reasoning emitted
    answered: bool = False
    sources: tuple[Source, ...] = ()
    images: tuple[Image, ...] = ()
    suggestions: tuple[str, ...] = ()
    done: bool = False  # `done` arrived
    over: bool = False  # the turn is finished or failed


def start_copilot_answer(options: AnswerOptions) -> CopilotState:
    """The state before the first frame."""
    return CopilotState(options=options)


def advance_copilot(state: CopilotState, event: CopilotEvent) -> tuple[CopilotState, list[AnswerEvent]]:
    """Apply one Copilot event. Challenges are the caller's (hashcash needs I/O) except Cloudflare's."""
    if state.over:
        return state, []
    if isinstance(event, CopilotText):
        return on_copilot_text(state, event)
    if isinstance(event, CopilotReasoning) and event.text:
        return replace(state, emitted=state.emitted + len(event.text)), [ReasoningDelta(event.text)]
    if isinstance(event, CopilotCitation) and event.source.url:
        if any(s.url == event.source.url for s in state.sources):
            return state, []
        return replace(state, sources=(*state.sources, event.source)), [Citation(event.source)]
    if isinstance(event, CopilotImage) and event.image.url:
        return replace(state, images=(*state.images, event.image)), [ImageGenerated(event.image)]
    if isinstance(event, CopilotSuggestions):
        state = replace(state, suggestions=event.suggestions)
        if not state.done:
            return state, [Suggestions(event.suggestions)]
        state, out = finish_copilot(state)
        return state, [Suggestions(event.suggestions), *out]
    if isinstance(event, CopilotDone):
        return replace(state, done=True), []
    if isinstance(event, CopilotChallenge) and event.method != "hashcash":
        return fail_copilot(
            state, UpstreamCaptcha(COPILOT_CLOUDFLARE_HELP, headers={"x-should-retry": "false"})
        )
    if isinstance(event, CopilotError):
        return fail_copilot(state, copilot_error(event))
    return state, []


def copilot_error(event: CopilotError) -> UpstreamError:
    """An `error` event as an error: a conversation that is gone can be replaced (once, quietly)."""
    if any(word in event.code.lower() for word in _GONE):
        return ConversationUnusable(f"The Copilot conversation is gone: {event.message}")
    return UpstreamBadResponse(f"Copilot reported an error: {event.message}")


def on_copilot_text(state: CopilotState, event: CopilotText) -> tuple[CopilotState, list[AnswerEvent]]:
    """A delta is sent as is; a replacement only for the part beyond what was sent (it cannot be unsent)."""
    if event.replace:
        split = split_new_text(state.raw, event.text, same_message=True)
        if split is None:
            return state, []
        base, new, _ = split
        raw, delta = base + new, new
    else:
        raw, delta = state.raw + event.text, event.text
    if not delta:
        return state, []
    state = replace(state, raw=raw, emitted=state.emitted + len(delta), answered=True)
    return state, [ContentDelta(delta)]


def finish_copilot(state: CopilotState) -> tuple[CopilotState, list[AnswerEvent]]:
    """End the turn after `done` (and the follow-ups, or the wait for them)."""
    if state.over:
        return state, []
    if not state.answered and not state.images:
        return fail_copilot(state, UpstreamBadResponse("Copilot finished without an answer."))
    out: list[AnswerEvent] = []
    for block in inline_blocks(state.sources, state.suggestions, state.options):
        out.append(ContentDelta(block))
        state = replace(state, emitted=state.emitted + len(block))
    state = replace(state, over=True)
    return state, [*out, Finished("stop", state.sources, state.suggestions, images=state.images)]


def fail_copilot(state: CopilotState, error: UpstreamError) -> tuple[CopilotState, list[AnswerEvent]]:
    """End the turn with `error`, reported as an interruption once something went out."""
    reported = interrupted(error) if state.emitted else error
    return replace(state, over=True), [UpstreamFailure(reported)]
