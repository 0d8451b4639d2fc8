"""Fault switches and per-request prompt directives for the Bing emulator."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CREATE_FAULTS: frozenset[str] = frozenset({
    "unauthorized", "forbidden", "internal", "missing_signature", "missing_ids", "html",
    "http404", "http401", "http500", "redirect_cn", "slow", "empty",
})

#: Chat faults answered with a type 2 error record (no messages) and a type 3.
ERROR_FAULTS: dict[str, tuple[str, str]] = {
    "throttled": ("Throttled", "Request is throttled."),
    "captcha": ("CaptchaChallenge", "User needs to solve CAPTCHA to continue."),
    "unauthorized": ("UnauthorizedRequest",
                     "Sorry, you need to login first to access this service."),
    "invalid_session": ("InvalidSession", ""),  # message depends on the conversation id
    "forbidden": ("Forbidden", "Forbidden"),
    "internal_error": ("InternalServerError", "Error processing request."),
}

#: Chat faults that change how the answer is streamed.
STREAM_FAULTS: frozenset[str] = frozenset({
    "drop", "stall", "stall_start", "close7", "close7_start", "retract", "apology_start",
    "disengaged", "turn_limit", "no_final", "restart", "shrink", "empty_message",
})

CHAT_FAULTS: frozenset[str] = frozenset(ERROR_FAULTS) | STREAM_FAULTS

_DIRECTIVE = re.compile(r"emulate:([A-Za-z_][A-Za-z0-9_]*)(?:=(\S+))?")
_TRAILING = ".,;:!?)]}'\"`"


@dataclass
class Faults:
    """Mutable, thread-safe fault switches; tests set fields from any thread."""

    create: str | None = None
    chat: str | None = None
    upgrade: int | None = None
    times: int | None = None
    slow_seconds: float = 30.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Reject unknown fault names at assignment time."""
        if name == "create" and value is not None and value not in CREATE_FAULTS:
            raise ValueError(f"unknown create fault {value!r}; known: {sorted(CREATE_FAULTS)}")
        if name == "chat" and value is not None and value not in CHAT_FAULTS:
            raise ValueError(f"unknown chat fault {value!r}; known: {sorted(CHAT_FAULTS)}")
        object.__setattr__(self, name, value)

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self.create = None
            self.chat = None
            self.upgrade = None
            self.times = None

    def take_create(self) -> str | None:
        """Return the create fault for this request, consuming one use."""
        value = self._take("create")
        return value if isinstance(value, str) else None

    def take_chat(self) -> str | None:
        """Return the chat fault for this request, consuming one use."""
        value = self._take("chat")
        return value if isinstance(value, str) else None

    def take_upgrade(self) -> int | None:
        """Return the HTTP status to reject this websocket upgrade with, consuming one use."""
        value = self._take("upgrade")
        return value if isinstance(value, int) else None

    def _take(self, kind: str) -> Any:
        """Read one fault field and decrement `times`; clear all faults when it reaches 0."""
        with self._lock:
            value = getattr(self, kind)
            if value is None:
                return None
            if self.times is not None:
                if self.times <= 0:
                    self.create = self.chat = self.upgrade = None
                    self.times = None
                    return None
                self.times -= 1
                if self.times == 0:
                    self.create = self.chat = self.upgrade = None
                    self.times = None
            return value


@dataclass
class Directives:
    """Per-request settings parsed from `emulate:NAME[=VALUE]` tokens in the prompt."""

    words: int | None = None
    think: float | None = None
    delay: float | None = None
    chunk: int | None = None
    fault: str | None = None


def parse_directives(text: str) -> Directives:
    """Parse every `emulate:` token of a prompt; unknown names are logged and ignored."""
    found = Directives()
    for match in _DIRECTIVE.finditer(text):
        name, raw = match.group(1).lower(), (match.group(2) or "").rstrip(_TRAILING)
        try:
            _apply(found, name, raw)
        except ValueError:
            log.warning("ignoring malformed emulate directive %r", name)
    return found


def _apply(found: Directives, name: str, raw: str) -> None:
    """Apply one directive to `found`."""
    if name == "words":
        found.words = max(1, int(float(raw)))
    elif name == "think":
        found.think = max(0.0, float(raw))
    elif name == "delay":
        found.delay = max(0.0, float(raw))
    elif name == "chunk":
        found.chunk = max(1, int(float(raw)))
    elif name == "fault" and raw in CHAT_FAULTS:
        found.fault = raw
    elif name in CHAT_FAULTS:
        found.fault = name
    else:
        log.warning("ignoring unknown emulate directive %r", name)


def strip_directives(text: str) -> str:
    """Return the prompt with every `emulate:` token removed."""
    return " ".join(_DIRECTIVE.sub(" ", text).split())
