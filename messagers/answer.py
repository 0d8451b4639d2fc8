"""The answer state machine: upstream events in, answer events out (pure; state is a value)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from messagers.events import (
    AnswerEvent,
    AnswerOptions,
    BotText,
    ContentDelta,
    Final,
    Finished,
    ImageRequested,
    InvocationEnd,
    SearchQuery,
    ServerClosed,
    Source,
    Throttling,
    UpstreamEvent,
    UpstreamFailure,
)
from utils.errors import (
    ConversationUnusable,
    UpstreamBadResponse,
    UpstreamClosed,
    UpstreamError,
    interrupted,
    result_error,
)

_MARKER = re.compile(r"\[\^(\d+)\^\]")
_PARTIAL_MARKER = re.compile(r"\[(?:\^(?:\d+\^?)?)?$")
_FILTERED = frozenset({"Apology", "Disengaged"})


@dataclass(frozen=True, slots=True)
class AnswerState:
    """What has been told to the client so far."""

    options: AnswerOptions
    message_id: str | None = None  # the bot message `raw` belongs to
    raw: str = ""  # that message's text already consumed (cleaned and emitted)
    emitted: int = 0  # characters of content emitted in all
    answered: bool = False  # some answer text was emitted
    queries: tuple[str, ...] = ()
    throttling: Throttling | None = None
    done: bool = False


def start_answer(options: AnswerOptions) -> AnswerState:
    """The state before the first frame."""
    return AnswerState(options=options)


def advance(state: AnswerState, event: UpstreamEvent) -> tuple[AnswerState, list[AnswerEvent]]:
    """Apply one upstream event; return the new state and what to tell the client."""
    if state.done:
        return state, []
    if isinstance(event, BotText):
        return on_text(state, event, final=False)
    if isinstance(event, SearchQuery):
        return on_search(state, event)
    if isinstance(event, Throttling):
        return replace(state, throttling=event), []
    if isinstance(event, Final):
        return on_final(state, event)
    if isinstance(event, ServerClosed):
        return fail(state, UpstreamClosed(f"Bing closed the connection with an error: {event.error}"))
    if isinstance(event, InvocationEnd):
        return fail(state, UpstreamClosed("Bing ended the turn without a final answer."))
    return state, []


def on_search(state: AnswerState, event: SearchQuery) -> tuple[AnswerState, list[AnswerEvent]]:
    """Remember the query; show it only when the request asked for search progress inline."""
    state = replace(state, queries=(*state.queries, event.query))
    if "search" not in state.options.inline or not event.query:
        return state, []
    return emit(state, f"> Searching the web for: {event.query}\n\n")


def on_text(state: AnswerState, event: BotText, *, final: bool) -> tuple[AnswerState, list[AnswerEvent]]:
    """Diff a cumulative message against what was consumed; handle retraction and limits.

    Only the new part of the text is cleaned, so a long answer costs linear, not quadratic, time.
    """
    if event.origin in _FILTERED or event.origin == "TurnLimiter":
        return on_filtered(state, event)
    split = split_new_text(state.raw, event.text, same_message=event.message_id == state.message_id)
    if split is None:
        return state, []
    base, new, separator = split
    delta, used = clean_piece(new, keep_markers="sources" in state.options.inline, final=final)
    delta = separator + delta if delta else ""
    state = AnswerState(  # (a new state per frame, spelled out: `replace` costs 1.5 times as much)
        options=state.options,
        message_id=event.message_id,
        raw=base + new[:used],
        emitted=state.emitted + len(delta),
        answered=state.answered or bool(delta),
        queries=state.queries,
        throttling=state.throttling,
        done=state.done,
    )
    return state, [ContentDelta(delta)] if delta else []


def on_filtered(state: AnswerState, event: BotText) -> tuple[AnswerState, list[AnswerEvent]]:
    """Apology (retraction), Disengaged or TurnLimiter: what was sent stays; finish as filtered."""
    if event.origin == "TurnLimiter" and not state.answered:
        return fail(state, ConversationUnusable("The Bing conversation reached its turn limit."))
    out: list[AnswerEvent] = []
    if not state.answered and event.text:
        state, out = emit(state, clean_text(event.text, keep_markers=False, final=True))
    state = replace(state, done=True)
    return state, [*out, Finished("content_filter", queries=state.queries)]


def on_final(state: AnswerState, final: Final) -> tuple[AnswerState, list[AnswerEvent]]:
    """The type 2 item: reconcile the answer text, add extras, finish or fail."""
    if final.value != "Success":
        return fail(
            state,
            result_error(final.value, final.message, throttle_retry_after=state.options.throttle_retry_after),
        )
    queries = state.queries or final.queries
    state = replace(state, queries=queries, throttling=final.throttling or state.throttling)
    out: list[AnswerEvent] = []
    if final.answer is not None:
        state, out = on_text(state, final.answer, final=True)
        if state.done:
            return state, out
    if not state.answered and not final.image_prompts:
        return fail(state, UpstreamBadResponse("Bing's final frame carried no answer."))
    out += [ImageRequested(prompt) for prompt in final.image_prompts]  # drawn right after the text
    for block in extra_blocks(final, state.options):
        state, more = emit(state, block)
        out += more
    state = replace(state, done=True)
    return state, [*out, Finished("stop", final.sources, final.suggestions, queries, state.throttling)]


def merge_deltas(events: list[AnswerEvent]) -> list[AnswerEvent]:
    """Adjacent content deltas joined into one, so one upstream message makes at most one write."""
    if len(events) < 2:
        return events
    merged: list[AnswerEvent] = []
    for event in events:
        if merged and isinstance(event, ContentDelta) and isinstance(merged[-1], ContentDelta):
            merged[-1] = ContentDelta(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged


def fail(state: AnswerState, error: UpstreamError) -> tuple[AnswerState, list[AnswerEvent]]:
    """End the turn with `error`, reported as an interruption once content went out."""
    reported = interrupted(error) if state.emitted else error
    return replace(state, done=True), [UpstreamFailure(reported)]


def emit(state: AnswerState, text: str) -> tuple[AnswerState, list[AnswerEvent]]:
    """Send `text` as content."""
    return replace(state, emitted=state.emitted + len(text)), [ContentDelta(text)]


def split_new_text(consumed: str, text: str, *, same_message: bool) -> tuple[str, str, str] | None:
    """(kept prefix, new raw text, separator) for cumulative `text`, or None when nothing is new.

    Bing's text usually grows; it can shrink (ignored until it grows past), be rewritten in place
    (continued by position, as sent text cannot be unsent), or restart in a new message (emitted
    after a blank line once it no longer repeats what was sent).
    """
    if text.startswith(consumed):
        return consumed, text[len(consumed) :], ""
    if len(text) <= len(consumed) or consumed.startswith(text):
        return None
    if same_message:
        return text[: len(consumed)], text[len(consumed) :], ""
    return "", text, "\n\n"


def clean_piece(text: str, *, keep_markers: bool, final: bool) -> tuple[str, int]:
    """(cleaned text, characters used): markers `[^1^]` become `[1]` or go; a cut-off one waits."""
    if "[" not in text:
        return text, len(text)
    used = len(text)
    if not final:
        partial = _PARTIAL_MARKER.search(text, max(used - 8, 0))
        if partial is not None:
            used = partial.start()
    return _MARKER.sub(r"[\1]" if keep_markers else "", text[:used]), used


def clean_text(text: str, *, keep_markers: bool, final: bool) -> str:
    """The whole of `text` cleaned (see `clean_piece`)."""
    return clean_piece(text, keep_markers=keep_markers, final=final)[0]


def extra_blocks(final: Final, options: AnswerOptions) -> list[str]:
    """Markdown blocks appended to the content when the request asked for them inline."""
    return inline_blocks(final.sources, final.suggestions, options)


def inline_blocks(
    sources: tuple[Source, ...], suggestions: tuple[str, ...], options: AnswerOptions
) -> list[str]:
    """Sources and suggested follow-ups as markdown blocks, for the extras asked for inline."""
    blocks = []
    if "sources" in options.inline and sources:
        lines = "\n".join(f"{i}. [{s.title}]({s.url})" for i, s in enumerate(sources, 1))
        blocks.append(f"{EXTRAS_RULE}**Sources**\n{lines}")
    if "suggestions" in options.inline and suggestions:
        lines = "\n".join(f"- {s}" for s in suggestions)
        blocks.append(f"{EXTRAS_RULE}**Suggested follow-ups**\n{lines}")
    return blocks


EXTRAS_RULE = "\n\n---\n"
