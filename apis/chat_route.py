"""`POST .../chat/completions` without FastAPI's per-request machinery, for the requests that need none.

FastAPI's routing costs a good share of a short answer's CPU before any work is done: matching the
path through the included routers, solving the dependencies, parsing and validating the body,
running the endpoint in an exit stack. `ChatFastPath`, the innermost middleware, takes a chat
completion whose body is JSON (by its content type, or none) that the `ChatRequest` model accepts,
and does just that: the API key check (`require_api_key`), orjson, the model, and `answer_chat`,
the same function the FastAPI route calls; a `ProxyError` it raises becomes its envelope through
the same handler. Anything else (another content type, JSON orjson refuses, a body the model
rejects) goes on to the FastAPI route with its body replayed: that route stays the reference for
every error it reports. The outer middlewares (request log, limits, drain, CORS, the catch-all)
wrap both alike.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apis.auth import require_api_key
from apis.errors import proxy_error_response
from apis.routes import answer_chat
from apis.schemas import ChatRequest
from utils.errors import ProxyError

CHAT_PATH = "/chat/completions"


class ChatFastPath:
    """ASGI middleware: answers plain chat completions itself, passes every other request on."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.paths = frozenset(f"{prefix}{CHAT_PATH}" for prefix in prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) not in self.paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            body = await request.body()
        except ClientDisconnect:  # gone (or cut off by MAX_BODY_BYTES, which answered 413): no answer
            return
        chat = plain_chat_request(scope, body)
        if chat is None:
            await self.app(scope, replaying(body, receive), send)
            return
        try:
            await require_api_key(request)
            response = await answer_chat(chat, request)
        except ProxyError as exc:
            response = proxy_error_response(request, exc)
        await response(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path the routes see: without the `root_path` a proxy may mount the service under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the body already read first, then what the server sends next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def plain_chat_request(scope: Scope, body: bytes) -> ChatRequest | None:
    """The request when the body is JSON that the model accepts, else None."""
    if not is_json(scope):
        return None
    try:
        data: Any = orjson.loads(body)
        return ChatRequest.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError):
        return None


def is_json(scope: Scope) -> bool:
    """No content type (FastAPI parses those as JSON too), or `application/json` with any parameters."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return True
