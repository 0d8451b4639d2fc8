"""Every failure as the OpenAI error envelope with a real status (never FastAPI's 422 `detail`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from utils.errors import ProxyError, UpstreamError

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "The server had an error while processing your request."


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def proxy_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A ProxyError as its status, headers and envelope."""
    assert isinstance(exc, ProxyError)
    if isinstance(exc, UpstreamError):
        log.warning("upstream failure: %s (%d)", exc.code, exc.status)
        request.app.state.health.record_failure(exc.code or "upstream_error")
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)


def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON or a schema problem: 400 with the offending parameter named."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        message, param = "We could not parse the JSON body of your request.", None
    else:
        param = ".".join(location) or None
        message = f"Invalid request: {first.get('msg', 'bad value')}" + (f" at `{param}`." if param else ".")
    return JSONResponse(
        error_body(message, "invalid_request_error", param=param, code="invalid_request"), 400
    )


def http_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in the envelope."""
    assert isinstance(exc, StarletteHTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return JSONResponse(
        error_body(message, "invalid_request_error"), exc.status_code, headers=getattr(exc, "headers", None)
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are caught by `CatchAll` inside CORS."""
    app.add_exception_handler(ProxyError, proxy_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)


class CatchAll:
    """500 envelope for bugs, raised inside the CORS middleware so browsers can read it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error")
            if started:
                raise
            await JSONResponse(error_body(INTERNAL_MESSAGE, "server_error"), 500)(scope, receive, send)
