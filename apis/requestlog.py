"""One structured log line per request, its metrics, and the `X-Request-ID` response header.

The middleware opens a `RequestRecord` (utils/tracking.py) that the route, the turn and the stream
fill in: model, the account the turn ran on, the first answer text, an in-band error. When the
response ends it logs one line (`request id=... status=...`, or a JSON object with LOG_FORMAT=json),
counts chat completions in Prometheus and in the status page's recent window. Health checks,
scrapes, the page and its assets are logged at DEBUG, to keep polling out of INFO logs.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apis.recent import RecentRequests
from utils import metrics
from utils.ids import hex_id
from utils.tracking import CURRENT, RequestRecord

log = logging.getLogger("apis.requests")
HEADER = "x-request-id"
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
QUIET_PATHS = ("/health", "/metrics", "/status", "/static/", "/favicon.ico")
ERROR_BODY_LIMIT = 65536


def request_id_from(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is short and plain (letters, digits, `._:-`), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER.encode():
            candidate = str(value.decode("latin-1")).strip()
            if SANE_ID.fullmatch(candidate):
                return candidate
            break
    return hex_id()


def is_chat(method: str, path: str) -> bool:
    """A chat completion request, under any of the served prefixes (not a CORS preflight)."""
    return method == "POST" and path.endswith("/chat/completions")


def is_quiet(path: str) -> bool:
    """Polled paths whose lines go to DEBUG."""
    return path == "/" or path.startswith(QUIET_PATHS)


class ResponseTap:
    """What the middleware learns from the messages going out: status, bytes, an error body."""

    def __init__(self, record: RequestRecord, send: Send) -> None:
        self.record, self._send = record, send
        self.status = 0
        self.bytes_in = self.bytes_out = 0
        self.finished = False
        self._json_error = False
        self._error_body = bytearray()

    async def receive_from(self, receive: Receive) -> Message:
        """Count request body bytes; note a disconnect that comes before the response ended."""
        message = await receive()
        if message["type"] == "http.request":
            self.bytes_in += len(message.get("body", b""))
        elif message["type"] == "http.disconnect" and not self.finished:
            self.record.client_gone = True
        return message

    async def send(self, message: Message) -> None:
        """Add the request id header; count body bytes; keep a JSON error body to read its code."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            headers.append((HEADER.encode(), self.record.request_id.encode()))
            self._json_error = self.status >= 400 and any(
                name == b"content-type" and value.startswith(b"application/json") for name, value in headers
            )
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.bytes_out += len(body)
            if self._json_error and len(self._error_body) < ERROR_BODY_LIMIT:
                self._error_body += body
            self.finished = self.finished or not message.get("more_body", False)
        await self._send(message)

    def error_code(self) -> str | None:
        """The `error.code` (else `error.type`) of a JSON error envelope that was sent."""
        if not self._error_body:
            return None
        try:
            error = orjson.loads(bytes(self._error_body)).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(error, dict):
            return None
        code = error.get("code") or error.get("type")
        return str(code) if code else None


class RequestLog:
    """ASGI middleware: a request record in context, then one line, metrics and the recent window."""

    def __init__(self, app: ASGIApp, recent: RecentRequests) -> None:
        self.app, self.recent = app, recent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id_from(scope), scope["method"], scope["path"])
        tap = ResponseTap(record, send)
        chat = is_chat(record.method, record.path)
        token = CURRENT.set(record)
        if chat:
            metrics.IN_PROGRESS.inc()

        async def tapped_receive() -> Message:
            return await tap.receive_from(receive)

        try:
            await self.app(scope, tapped_receive, tap.send)
        except Exception:
            tap.status = tap.status or 500
            raise
        finally:
            CURRENT.reset(token)
            if chat:
                metrics.IN_PROGRESS.dec()
            self.finish(record, tap, scope, chat)

    def finish(self, record: RequestRecord, tap: ResponseTap, scope: Scope, chat: bool) -> None:
        """Log the request's line; for a chat completion, count it."""
        if record.error_code is None and tap.status >= 400:
            record.error_code = tap.error_code()
        fields = request_fields(record, tap, scope)
        level = logging.DEBUG if is_quiet(record.path) and tap.status < 500 else logging.INFO
        if log.isEnabledFor(level):  # the line is built only when it will be written
            log.log(level, "request %s", format_fields(fields), extra={"fields": fields})
        if chat:
            record_metrics(record, fields)
            self.recent.add(summary_of(fields))


def request_fields(record: RequestRecord, tap: ResponseTap, scope: Scope) -> dict[str, Any]:
    """The line's fields: ids, route, outcome, account, timings and sizes; never content or secrets."""
    now = time.monotonic()
    client = scope.get("client")
    return {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": tap.status or 500,
        "model": record.model,
        "stream": record.stream,
        "account": record.account,
        "attempts": record.attempts or None,
        "error": record.error_code,
        "in_band_error": record.in_band_error or None,
        "client_gone": record.client_gone or None,
        "ttft_ms": ms(record.first_token - record.started) if record.first_token else None,
        "total_ms": ms(now - record.started),
        "bytes_in": tap.bytes_in,
        "bytes_out": tap.bytes_out,
        "client": client[0] if client else None,
    }


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to 0.1 ms."""
    return round(seconds * 1000, 1)


def format_fields(fields: dict[str, Any]) -> str:
    """`key=value` pairs for the text format, leaving out empty ones."""
    return " ".join(f"{key}={value_text(value)}" for key, value in fields.items() if value is not None)


def value_text(value: Any) -> str:
    """A field value for the text format (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def record_metrics(record: RequestRecord, fields: dict[str, Any]) -> None:
    """Count a finished chat completion in the Prometheus instruments."""
    model = record.model or "none"
    metrics.REQUESTS.labels(model=model, status=str(fields["status"])).inc()
    metrics.TOTAL_TIME.labels(model=model).observe(fields["total_ms"] / 1000)
    if record.first_token is not None:
        metrics.TIME_TO_FIRST_TOKEN.labels(model=model).observe(record.first_token - record.started)
    if record.error_code:
        where = "in_band" if record.in_band_error else "status"
        metrics.REQUEST_ERRORS.labels(code=record.error_code, where=where).inc()


def summary_of(fields: dict[str, Any]) -> dict[str, Any]:
    """What the status page shows of one request."""
    keys = ("request_id", "model", "stream", "account", "status", "error", "ttft_ms", "total_ms")
    return {key: fields[key] for key in keys}
