"""The chat completions fast path (apis/chat_route.py): which requests it answers, and that everything
it passes on reaches the FastAPI route whole (body replayed) and is answered exactly as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Scope

import apis.chat_route
from apis.chat_route import plain_chat_request, route_path
from apis.routes import answer_chat

CHAT = {"model": "balanced", "messages": [{"role": "user", "content": "Hello there"}]}


def scope_with(content_type: bytes | None) -> Scope:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}


@pytest.mark.parametrize(
    ("content_type", "body", "taken"),
    [
        (b"application/json", b'{"messages": [{"role": "user", "content": "hi"}]}', True),
        (b"Application/JSON; charset=utf-8", b'{"messages": [{"role": "user", "content": "hi"}]}', True),
        (None, b'{"messages": [{"role": "user", "content": "hi"}]}', True),  # FastAPI reads it as JSON too
        (b"text/plain", b'{"messages": [{"role": "user", "content": "hi"}]}', False),
        (b"application/json", b'{"messages": [', False),  # not JSON
        (b"application/json", b'{"messages": [{"role": "user", "content": NaN}]}', False),  # orjson refuses
        (b"application/json", b'{"messages": []}', False),  # the model refuses
        (b"application/json", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', False),
        (b"application/json", b"", False),
    ],
)
def test_which_bodies_the_fast_path_takes(content_type: bytes | None, body: bytes, taken: bool) -> None:
    assert (plain_chat_request(scope_with(content_type), body) is not None) is taken


def test_route_path_leaves_out_the_root_path() -> None:
    mounted = {"path": "/bing/v1/chat/completions", "root_path": "/bing"}
    assert route_path(mounted) == "/v1/chat/completions"
    assert route_path({"path": "/v1/chat/completions", "root_path": ""}) == "/v1/chat/completions"


@pytest.fixture
def fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The models the fast path answered (the FastAPI route calls `apis.routes.answer_chat` itself)."""
    taken: list[str] = []

    async def counted(body: Any, request: Any) -> Any:
        taken.append(body.model)
        return await answer_chat(body, request)

    monkeypatch.setattr(apis.chat_route, "answer_chat", counted)
    return taken


@pytest.mark.parametrize("prefix", ["/v1", "", "/api", "/api/v1", "/v1/v1"])
def test_a_plain_request_is_answered_by_the_fast_path_under_every_prefix(
    base_url: str, fast_answers: list[str], prefix: str
) -> None:
    reply = httpx.post(f"{base_url}{prefix}/chat/completions", json=CHAT, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    assert fast_answers == ["balanced"]


def test_a_body_only_fastapi_reads_is_replayed_to_it_and_streamed_in_full(
    base_url: str, fast_answers: list[str]
) -> None:
    # NaN is JSON to Python's parser (and so to FastAPI) but not to orjson: the fast path passes it on.
    body = (
        b'{"model": "precise", "stream": true, "temperature": NaN,'
        b' "messages": [{"role": "user", "content": "Hi"}]}'
    )
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", content=body,
        headers={"content-type": "application/json"}, timeout=30,
    ) as reply:
        text = "".join(reply.iter_text())
    assert reply.status_code == 200
    assert '"finish_reason":"stop"' in text.replace(" ", "") and text.rstrip().endswith("data: [DONE]")
    assert fast_answers == []


def test_another_content_type_gets_fastapis_envelope(base_url: str, fast_answers: list[str]) -> None:
    reply = httpx.post(
        f"{base_url}/v1/chat/completions", content=b'{"messages": []}',
        headers={"content-type": "text/plain"}, timeout=30,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert fast_answers == []


def test_a_refusal_raised_on_the_fast_path_is_its_envelope(base_url: str, fast_answers: list[str]) -> None:
    reply = httpx.post(f"{base_url}/v1/chat/completions", json={**CHAT, "n": 3}, timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "n"
    assert fast_answers == ["balanced"]
