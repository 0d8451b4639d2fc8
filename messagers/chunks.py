"""OpenAI objects: streaming chunks and whole completions (pure; only ids and clocks are read)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from messagers.events import Finished, Image, Source
from utils.ids import hex_id
from utils.tokens import estimate_tokens

FINGERPRINT = "fp_bing_chat_api"


@dataclass(frozen=True, slots=True)
class ChunkContext:
    """What every chunk of one response shares."""

    id: str
    created: int
    model: str
    include_usage: bool = False


def new_context(model: str, *, include_usage: bool = False) -> ChunkContext:
    """A fresh completion id and timestamp for one request."""
    return ChunkContext(f"chatcmpl-{hex_id()}", int(time.time()), model, include_usage)


def chunk(ctx: ChunkContext, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice."""
    body: dict[str, Any] = {
        "id": ctx.id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if ctx.include_usage:
        body["usage"] = None
    return body


def role_chunk(ctx: ChunkContext) -> dict[str, Any]:
    """The first chunk: the assistant role."""
    return chunk(ctx, {"role": "assistant", "content": ""})


def content_chunk(ctx: ChunkContext, text: str) -> dict[str, Any]:
    """A content delta."""
    return chunk(ctx, {"content": text})


def reasoning_chunk(ctx: ChunkContext, text: str) -> dict[str, Any]:
    """A reasoning delta (`reasoning_content`, as other OpenAI-compatible servers send it)."""
    return chunk(ctx, {"reasoning_content": text})


def finish_chunk(ctx: ChunkContext, finished: Finished) -> dict[str, Any]:
    """The last choice chunk: `finish_reason`, plus sources and suggestions under `bing`."""
    body = chunk(ctx, {}, finished.reason)
    body["bing"] = extras(finished)
    return body


def usage_chunk(ctx: ChunkContext, usage: dict[str, Any]) -> dict[str, Any]:
    """The `stream_options.include_usage` chunk: no choices, only usage."""
    return {
        "id": ctx.id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [],
        "usage": usage,
    }


def completion(
    ctx: ChunkContext, content: str, finished: Finished, usage: dict[str, Any], reasoning: str = ""
) -> dict[str, Any]:
    """The non-streaming `chat.completion` object (`reasoning_content` only when there was some)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finished.reason}],
        "usage": usage,
        "bing": extras(finished),
    }


def usage_of(prompt_text: str, completion_text: str, reasoning_text: str = "") -> dict[str, Any]:
    """Estimated usage (see `utils.tokens`): neither upstream reports token counts."""
    prompt, answer = estimate_tokens(prompt_text), estimate_tokens(completion_text + reasoning_text)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": answer,
        "total_tokens": prompt + answer,
    }
    if reasoning_text:
        usage["completion_tokens_details"] = {"reasoning_tokens": estimate_tokens(reasoning_text)}
    return usage


def extras(finished: Finished) -> dict[str, Any]:
    """Sources, suggested follow-ups, search queries (and generated images), in structured form."""
    body: dict[str, Any] = {
        "sources": [source_dict(s) for s in finished.sources],
        "suggestions": list(finished.suggestions),
        "search_queries": list(finished.queries),
    }
    if finished.images:
        body["images"] = [image_dict(i) for i in finished.images]
    return body


def image_dict(image: Image) -> dict[str, str | None]:
    """A generated image as JSON."""
    return {"url": image.url, "thumbnail_url": image.thumbnail_url, "prompt": image.prompt}


def source_dict(source: Source) -> dict[str, str]:
    """A source as JSON."""
    return {"title": source.title, "url": source.url}
