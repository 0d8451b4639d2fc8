"""Plan one chat turn: the records to stream and the final item, per fault (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import frames
from .frames import Record
from .text import (
    APOLOGY_TEXT,
    DISENGAGED_TEXT,
    TURN_LIMIT_TEXT,
    Source,
    answer_text,
    prefixes,
    search_query,
    sources_for,
)

SEARCH_TYPES = ("InternalSearchQuery", "InternalSearchResult", "InternalLoaderMessage")
DISENGAGED_AGAIN = "_disengaged_again"


@dataclass
class TurnContext:
    """Everything needed to plan a turn, extracted from a validated chat frame."""

    arg: Record
    prompt: str
    tone: str
    search: bool
    context_chars: int
    words: int
    chunk: int
    throttling: Record
    meta: Record
    allowed: frozenset[str] | None = None
    image: str | None = None  # the uploaded picture the user attached, described

    @property
    def request_id(self) -> str:
        """Return the request id echoed in every record."""
        return str(self.meta["requestId"])


@dataclass
class Turn:
    """A planned turn; `updates` may hold None, meaning one empty websocket message."""

    prelude: list[Record]
    updates: list[Record | None]
    item: Record
    answer_text: str
    cut: int = 1


def plan_turn(ctx: TurnContext, fault: str | None) -> Turn:
    """Return the turn plan for a request, shaped by the stream fault (if any)."""
    if fault == "turn_limit":
        return _single(ctx, TURN_LIMIT_TEXT, origin="TurnLimiter")
    if fault == "apology_start":
        return _single(ctx, APOLOGY_TEXT, origin="Apology", offense="OffenseTrigger")
    if fault == DISENGAGED_AGAIN:
        return _single(ctx, DISENGAGED_TEXT, message_type="Disengaged")
    return _answer(ctx, fault)


def _single(ctx: TurnContext, text: str, origin: str = "DeepLeo", offense: str = "None",
            message_type: str | None = None) -> Turn:
    """Plan a turn whose only bot message is a fixed notice (limit, apology, disengaged)."""
    rid = ctx.request_id
    bot = frames.bot_message(str(uuid.uuid4()), rid, text, [], origin=origin,
                             message_type=message_type)
    final = dict(bot, messageType=message_type or "Chat")
    messages = [frames.user_echo(ctx.arg, offense), final]
    return Turn(prelude=[frames.throttling_update(ctx.throttling, rid)],
                updates=[frames.message_update(bot, rid, cursor=True)],
                item=frames.success_item(ctx.meta, messages, ctx.throttling),
                answer_text=text)


def _prelude(ctx: TurnContext, sources: list[Source]) -> tuple[list[Record], list[Record]]:
    """Return the records before the answer text and the search messages to keep in the item."""
    rid = ctx.request_id
    records = [frames.throttling_update(ctx.throttling, rid), frames.unknown_target_record()]
    kept: list[Record] = []
    if ctx.search:
        kept = [m for m in frames.search_messages(search_query(ctx.prompt), sources, rid)
                if _allowed(ctx, m["messageType"])]
        records += [frames.message_update(m, rid) for m in kept]
    tasks = frames.status_message("InternalTasksMessage", "", rid, hidden="[]")
    records.append(frames.message_update(tasks, rid))
    if ctx.search and _allowed(ctx, "InternalLoaderMessage"):
        loader = frames.status_message("InternalLoaderMessage", "Generating answers for you...",
                                       rid, hidden="Generating answers for you...")
        records.append(frames.message_update(loader, rid))
    return records, kept


def _allowed(ctx: TurnContext, message_type: str) -> bool:
    """Return whether the client's allowedMessageTypes admits a message type."""
    return ctx.allowed is None or message_type in ctx.allowed


@dataclass
class _Draft:
    """A normal answer being bent by a stream fault."""

    ctx: TurnContext
    msg_id: str
    text: str
    steps: list[str]
    sources: list[Source]
    updates: list[Record | None]
    bots: list[Record]
    offense: str = "None"

    @property
    def half(self) -> int:
        """Return the index of the update where partial faults stop."""
        return max(1, len(self.steps) // 2)


def _answer(ctx: TurnContext, fault: str | None) -> Turn:
    """Plan a normal answer, then bend it for stream faults."""
    sources = sources_for(ctx.prompt) if ctx.search else []
    text = answer_text(ctx.prompt, ctx.tone, ctx.search, ctx.context_chars, ctx.words,
                       len(sources) or 3, image=ctx.image)
    prelude, search_msgs = _prelude(ctx, sources)
    if fault == "disengaged":
        text = " ".join(text.split()[:12])
    steps, msg_id = prefixes(text, ctx.chunk), str(uuid.uuid4())
    final = frames.bot_message(msg_id, ctx.request_id, text, sources, final=True,
                               message_type="Chat")
    draft = _Draft(ctx, msg_id, text, steps, sources, _stream(ctx, msg_id, steps, sources), [final])
    _BENDS.get(fault or "", _closing_update)(draft)
    messages = [frames.user_echo(ctx.arg, draft.offense), *search_msgs, *draft.bots]
    return Turn(prelude=prelude, updates=draft.updates, answer_text=draft.text, cut=draft.half,
                item=frames.success_item(ctx.meta, messages, ctx.throttling))


def _closing_update(d: _Draft) -> None:
    """Repeat the final bot message (with suggestions, no messageType) as the last update."""
    last = dict(d.bots[-1])
    last.pop("messageType", None)
    d.updates.append(frames.message_update(last, d.ctx.request_id))


def _restart(d: _Draft) -> None:
    """Midway, start a new bot messageId whose text starts over."""
    new_id = str(uuid.uuid4())
    d.updates = [*_stream(d.ctx, d.msg_id, d.steps[:d.half], d.sources),
                 *_stream(d.ctx, new_id, d.steps, d.sources)]
    partial = frames.bot_message(d.msg_id, d.ctx.request_id, d.steps[d.half - 1], d.sources,
                                 message_type="Chat")
    d.bots = [partial, dict(d.bots[0], messageId=new_id)]
    _closing_update(d)


def _shrink(d: _Draft) -> None:
    """Insert one update whose cumulative text is shorter than the one before."""
    if len(d.steps) >= 3:
        shorter = frames.bot_message(d.msg_id, d.ctx.request_id, d.steps[d.half - 1], d.sources)
        d.updates.insert(d.half + 1, frames.message_update(shorter, d.ctx.request_id))
    _closing_update(d)


def _empty_message(d: _Draft) -> None:
    """Insert one empty websocket message midway."""
    d.updates.insert(d.half, None)
    _closing_update(d)


def _retract(d: _Draft) -> None:
    """Replace the partial answer with an Apology (same messageId)."""
    apology = frames.bot_message(d.msg_id, d.ctx.request_id, APOLOGY_TEXT, [], origin="Apology")
    d.updates = [*d.updates[:d.half], frames.message_update(apology, d.ctx.request_id)]
    d.bots, d.text, d.offense = [dict(apology, messageType="Chat")], APOLOGY_TEXT, "Unknown"


def _disengaged(d: _Draft) -> None:
    """Follow a short answer with a Disengaged bot message."""
    gone = frames.bot_message(str(uuid.uuid4()), d.ctx.request_id, DISENGAGED_TEXT, [],
                              message_type="Disengaged")
    d.updates.append(frames.message_update(gone, d.ctx.request_id, cursor=True))
    d.bots.append(gone)


_BENDS: dict[str, Callable[[_Draft], None]] = {
    "restart": _restart, "shrink": _shrink, "empty_message": _empty_message,
    "retract": _retract, "disengaged": _disengaged,
}


def _stream(ctx: TurnContext, msg_id: str, steps: list[str],
            sources: list[Source]) -> list[Record | None]:
    """Return cumulative-text updates for one bot message id."""
    return [frames.message_update(frames.bot_message(msg_id, ctx.request_id, step, sources),
                                  ctx.request_id, cursor=(i == 0))
            for i, step in enumerate(steps)]
