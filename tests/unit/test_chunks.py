"""OpenAI chunk and completion shapes, SSE framing, usage estimates."""

from __future__ import annotations

import json

from messagers.chunks import (
    completion,
    content_chunk,
    finish_chunk,
    new_context,
    role_chunk,
    usage_chunk,
    usage_of,
)
from messagers.events import Finished, Source
from messagers.sse import DONE, encode_data
from utils.tokens import estimate_tokens


def test_context_is_fresh_per_request() -> None:
    a, b = new_context("precise"), new_context("precise")
    assert a.id != b.id and a.id.startswith("chatcmpl-")


def test_chunks_share_id_created_and_model() -> None:
    ctx = new_context("gpt-4")
    chunks = [role_chunk(ctx), content_chunk(ctx, "hi"), finish_chunk(ctx, Finished("stop"))]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (ctx.id, ctx.created, "gpt-4", "chat.completion.chunk")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert chunks[2]["choices"][0]["finish_reason"] == "stop" and chunks[2]["choices"][0]["delta"] == {}
    assert "usage" not in chunks[1]


def test_usage_null_on_every_chunk_when_asked_then_a_usage_chunk() -> None:
    ctx = new_context("precise", include_usage=True)
    assert content_chunk(ctx, "x")["usage"] is None
    last = usage_chunk(ctx, usage_of("abcd", "abcdefgh"))
    assert last["choices"] == [] and last["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }


def test_completion_object_carries_structured_extras() -> None:
    ctx = new_context("creative")
    finished = Finished("stop", (Source("Ex", "https://example.com"),), ("more?",), ("q",))
    body = completion(ctx, "answer", finished, usage_of("p", "answer"))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "answer"
    assert body["bing"] == {
        "sources": [{"title": "Ex", "url": "https://example.com"}],
        "suggestions": ["more?"],
        "search_queries": ["q"],
    }


def test_sse_is_data_lines_only() -> None:
    raw = encode_data({"a": "é\nb"})
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.count(b"\n") == 2
    assert json.loads(raw[6:]) == {"a": "é\nb"}
    assert DONE == b"data: [DONE]\n\n"


def test_token_estimate() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("你好") == 2
