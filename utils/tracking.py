"""What one HTTP request did, gathered across layers while it runs, for its log line and metrics.

The request-log middleware (`apis/requestlog.py`) opens a `RequestRecord` and puts it in a context
variable; code deeper down notes facts into it (the model, the account the turn ran on, the first
answer text, an in-band error) without knowing about the web front. Tasks started inside the request
inherit the variable, and they all share the one record object. Outside a request, notes are ignored.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    """One request's facts; nothing in it may ever be a prompt, a cookie or a key."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    stream: bool | None = None
    account: str | None = None
    attempts: int = 0
    first_token: float | None = None
    error_code: str | None = None
    in_band_error: bool = False
    client_gone: bool = False


CURRENT: ContextVar[RequestRecord | None] = ContextVar("bingapi_request", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    record = CURRENT.get()
    return record.request_id if record is not None else None


def note_model(model: str, stream: bool) -> None:
    """The (resolved) model the request asked for, and whether it streams."""
    record = CURRENT.get()
    if record is not None:
        record.model, record.stream = model, stream


def note_account(name: str) -> None:
    """The account a turn attempt runs on; the last one noted is where the answer came from."""
    record = CURRENT.get()
    if record is not None:
        record.account = name
        record.attempts += 1


def note_first_token() -> None:
    """The first answer text arrived (only the first call counts)."""
    record = CURRENT.get()
    if record is not None and record.first_token is None:
        record.first_token = time.monotonic()


def note_error(code: str | None, *, in_band: bool = False) -> None:
    """The request ended in an error envelope with this code (inside a started stream if `in_band`)."""
    record = CURRENT.get()
    if record is not None:
        record.error_code = code or "error"
        record.in_band_error = record.in_band_error or in_band
