"""Logging set-up; the service logs outcomes and codes, never prompts, cookies or keys.

LOG_FORMAT=text (the default) writes `time LEVEL logger: message` lines; LOG_FORMAT=json writes one
JSON object per line. Either way, a line logged while a request is handled carries its request id,
and the one line per request (`apis/requestlog.py`) carries its fields as `record.fields`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from utils.tracking import current_request_id

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The plain format, with ` request_id=...` added to lines logged inside a request."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id and not hasattr(record, "fields"):  # the request line names its id itself
            line += f" request_id={request_id}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, and a request line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being handled (None outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


def make_handler(fmt: str) -> logging.Handler:
    """A stderr handler in the given LOG_FORMAT (`text` or `json`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, at process start; per-connection chatter stays quiet."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(fmt)])
    quiet = max(logging.WARNING, logging.getLogger().level)
    for chatty in ("websockets", "httpx", "httpcore"):  # one line per connection or request
        logging.getLogger(chatty).setLevel(quiet)
