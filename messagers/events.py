"""Typed events: what Bing said (upstream events) and what the client gets told (answer events).

Answer events are what every upstream (Bing ChatHub, Copilot) yields through the upstream interface
(`conversations/upstreams.py`): text deltas, reasoning deltas, citations, generated images,
suggested follow-ups, the finish (which lists the citations, follow-ups and images again, so a
consumer may ignore the individual events), a failure, or a note that the upstream is still working.
Bing reports citations and follow-ups only in its final frame, so for Bing they come on `Finished`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.errors import UpstreamError

# --- Upstream events: one ChatHub record becomes zero or more of these. ---


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class BotText:
    """A visible bot message; `text` is cumulative (the whole message so far)."""

    message_id: str
    text: str
    origin: str = "DeepLeo"  # "Apology", "TurnLimiter", "Disengaged" are the special ones


@dataclass(frozen=True, slots=True)
class SearchQuery:
    query: str


@dataclass(frozen=True, slots=True)
class Throttling:
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class Final:
    """The type 2 item: the turn's outcome and the whole answer."""

    value: str
    message: str
    answer: BotText | None = None
    sources: tuple[Source, ...] = ()
    suggestions: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()
    throttling: Throttling | None = None
    image_prompts: tuple[str, ...] = ()  # GenerateContentQuery (IMAGE): Bing asks the client to draw


@dataclass(frozen=True, slots=True)
class InvocationEnd:
    """Type 3: the turn is over (normally right after the final item)."""

    error: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Type 6: the server keeps the socket alive; the client echoes it."""


@dataclass(frozen=True, slots=True)
class ServerClosed:
    """Type 7, or any record carrying an `error`: fatal for this turn."""

    error: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Anything we do not use; `kind` names it for a debug log."""

    kind: str


UpstreamEvent = BotText | SearchQuery | Throttling | Final | InvocationEnd | Ping | ServerClosed | Ignored

# --- Answer events: what the OpenAI side is built from. ---


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Reasoning text (Copilot's Think Deeper), never mixed into the content."""

    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image the upstream generated."""

    url: str
    thumbnail_url: str | None = None
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ImageGenerated:
    """An image arrived mid-answer (it is also listed again on `Finished.images`)."""

    image: Image


@dataclass(frozen=True, slots=True)
class Citation:
    """A source arrived mid-answer (Copilot); every source is listed again on `Finished.sources`."""

    source: Source


@dataclass(frozen=True, slots=True)
class Suggestions:
    """Suggested follow-ups arrived (Copilot); they are listed again on `Finished.suggestions`."""

    suggestions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop" | "content_filter"
    sources: tuple[Source, ...] = ()  # citations
    suggestions: tuple[str, ...] = ()  # suggested follow-ups
    queries: tuple[str, ...] = ()
    throttling: Throttling | None = None  # the conversation's turn counters, when Bing sent them
    images: tuple[Image, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """The turn failed; the caller raises `error`."""

    error: UpstreamError


@dataclass(frozen=True, slots=True)
class Waiting:
    """Bing is still working and no answer text has come; the stream may open now."""


@dataclass(frozen=True, slots=True)
class ImageRequested:
    """Bing's answer asks for an image of `prompt` (PROTOCOL.md §6.1); the turn runs Image Creator."""

    prompt: str


AnswerEvent = (
    ContentDelta
    | ReasoningDelta
    | Citation
    | ImageGenerated
    | ImageRequested
    | Suggestions
    | Finished
    | UpstreamFailure
    | Waiting
)


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """Per-request choices that change the content: which extras to show inline."""

    inline: frozenset[str] = field(default_factory=frozenset)
    throttle_retry_after: int = 3600
