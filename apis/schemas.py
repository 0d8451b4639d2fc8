"""Request models: lenient like real OpenAI servers (unknown fields ignored), strict on what we use."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from utils.errors import InvalidRequest

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_JSON_DEPTH = 64  # far beyond any real request, tool schemas included
LONE_SURROGATE = "the body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not text"

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    """One part of a list `content`: `text`, or another type the composer will judge."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[ContentPart | str] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False


class UsableJson(BaseModel):
    """A request body: refuses what parses as JSON but cannot be passed on (see `json_problem`)."""

    @model_validator(mode="before")
    @classmethod
    def refuse_unusable_json(cls, data: Any) -> Any:
        """Raise the problem `json_problem` finds, if any."""
        problem = json_problem(data)
        if problem:
            raise ValueError(problem)
        return data


class ChatRequest(UsableJson):
    """`POST /v1/chat/completions`; the last four fields are this service's own extensions."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "precise",
                    "messages": [
                        {"role": "system", "content": "Answer in one sentence."},
                        {"role": "user", "content": "What is the capital of France?"},
                    ],
                    "stream": False,
                }
            ]
        },
    )
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tool_choice: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    user: Any = None  # some UIs send a dict here; only a string scopes conversation reuse
    inline_extras: list[str] | None = Field(
        None,
        description="Show extras inside `content`: any of search, sources, suggestions "
        "(default: the INLINE_EXTRAS setting). They are always in the `bing` field.",
    )

    @property
    def include_usage(self) -> bool:
        """True when a streaming request asked for the final usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def json_problem(data: Any) -> str | None:
    """Why a parsed body cannot be used, or None.

    Two things parse but break later: half a UTF-16 pair (`"\\ud800"`), which is not text and can
    be neither sent on nor echoed in an error, and nesting deeper than MAX_JSON_DEPTH (the JSON
    encoders used downstream stop at 254 levels). The walk is iterative, as bodies may nest as deep
    as the JSON parser allows.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return LONE_SURROGATE
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"the body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def check_supported(request: ChatRequest) -> None:
    """Refuse what Bing cannot do (several choices, forced tool calls, audio); log ignored fields."""
    if request.model_extra:
        log.debug("ignored request fields: %s", sorted(request.model_extra))
    if request.n is not None and request.n != 1:
        raise InvalidRequest("Bing gives one answer per request: `n` must be 1.", param="n")
    choice = request.tool_choice
    if choice == "required" or isinstance(choice, dict):
        raise InvalidRequest(
            "Bing cannot call tools: `tool_choice` may only be `auto` or `none`.", param="tool_choice"
        )
    if request.audio is not None or "audio" in (request.modalities or []):
        raise InvalidRequest("Audio output is not supported.", param="modalities")


class ImageRequest(UsableJson):
    """`POST /v1/images/generations`: `size`, `model`, `quality`, `style` and `user` are accepted and
    ignored (Bing decides); unknown fields too."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"prompt": "A lighthouse at dawn, watercolour", "n": 1}]},
    )
    prompt: str
    n: int | None = None
    response_format: Literal["url", "b64_json"] | None = None
    size: str | None = None
    model: str | None = None
    quality: str | None = None
    style: str | None = None
    user: Any = None
