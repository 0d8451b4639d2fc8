"""Fault switches, fault rates, per-account cookie flags and per-request prompt directives."""

from __future__ import annotations

import logging
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CREATE_FAULTS: frozenset[str] = frozenset({
    "unauthorized", "forbidden", "internal", "missing_signature", "missing_ids", "html",
    "http404", "http401", "http500", "http429", "redirect_cn", "slow", "empty",
})

#: Faults of Copilot's /c/api/start only (Bing's create ignores them): no /c/api/start (404, so
#: clients fall back to /c/api/conversations), a Cloudflare challenge page, an `isBlocked` account.
COPILOT_START_FAULTS: frozenset[str] = frozenset({"no_start", "cloudflare", "blocked"})

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
    "drop", "drop_start", "stall", "stall_start", "close7", "close7_start", "retract",
    "apology_start", "disengaged", "turn_limit", "no_final", "restart", "shrink", "empty_message",
})

#: Chat faults of the Copilot socket only (`drop`, `drop_start`, `stall` and `stall_start` apply
#: there too): an `error` event before / after some text, a hashcash challenge (verified), a
#: Cloudflare challenge, a close before `done`, a `replaceText` correction, an `imageGenerated`.
COPILOT_FAULTS: frozenset[str] = frozenset({
    "error_event", "error_mid", "hashcash", "cloudflare", "no_done", "replace", "image",
})

CHAT_FAULTS: frozenset[str] = frozenset(ERROR_FAULTS) | STREAM_FAULTS | COPILOT_FAULTS

#: Per-account behaviour, switched on by an `emulate=FLAG[,FLAG...]` cookie: the flag, then what
#: Bing answers (create for `expired`, every chat for all three; the first flag listed here wins).
ACCOUNT_FLAGS: dict[str, tuple[str, str]] = {
    "expired": ERROR_FAULTS["unauthorized"],
    "captcha": ERROR_FAULTS["captcha"],
    "throttled": ERROR_FAULTS["throttled"],
    "blocked": ERROR_FAULTS["forbidden"],
}
RATES: tuple[str, ...] = ("create_failure_rate", "drop_rate", "drop_before_text_rate")

#: Image Creator faults (PROTOCOL.md §6.1), as `Faults.image` or as an `emulate:NAME` directive in
#: the image prompt (a chat prompt's directive is carried into the GenerateContentQuery it asks for).
IMAGE_FAULTS: frozenset[str] = frozenset({
    "image_blocked",      # POST /images/create answers "This prompt has been blocked"
    "image_reviewed",     # ... "This prompt is being reviewed"
    "image_language",     # ... "We're working hard to offer Image Creator in more languages"
    "image_unavailable",  # ... "We can't create your images right now"
    "no_coins",           # ... "0 coins available"
    "image_rt3",          # rt=4 answers a page without a redirect; rt=3 redirects
    "image_pending",      # polling answers {"errorMessage": "Pending"} (blocked after the fact)
    "image_timeout",      # polling never finds the images ready
    "image_placeholder",  # the result page shows placeholder pictures ("bad images")
})
#: kblob faults, as `Faults.upload` (or the `emulate=upload_refused` cookie flag).
UPLOAD_FAULTS: frozenset[str] = frozenset({"upload_refused", "upload_http500"})
#: Cookie flags for the image endpoints only; chat is unaffected by them.
IMAGE_ACCOUNT_FLAGS: frozenset[str] = frozenset({"no_coins", "upload_refused"})

_DIRECTIVE = re.compile(r"emulate:([A-Za-z_][A-Za-z0-9_]*)(?:=(\S+))?")
_TRAILING = ".,;:!?)]}'\"`"


@dataclass
class Faults:
    """Mutable, thread-safe fault switches; tests set fields from any thread."""

    create: str | None = None
    chat: str | None = None
    upgrade: int | None = None
    image: str | None = None  # one of IMAGE_FAULTS, for every image creation (not counted by `times`)
    upload: str | None = None  # one of UPLOAD_FAULTS, for every kblob upload (not counted by `times`)
    times: int | None = None
    slow_seconds: float = 30.0
    create_failure_rate: float = 0.0  # share of creates answered HTTP 500 (transient)
    drop_rate: float = 0.0  # share of chats whose TCP connection is aborted after some text
    drop_before_text_rate: float = 0.0  # share of chats aborted before any answer text
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Reject unknown fault names and rates outside [0, 1] at assignment time."""
        if name == "create" and value is not None and value not in CREATE_FAULTS | COPILOT_START_FAULTS:
            known = sorted(CREATE_FAULTS | COPILOT_START_FAULTS)
            raise ValueError(f"unknown create fault {value!r}; known: {known}")
        if name == "chat" and value is not None and value not in CHAT_FAULTS:
            raise ValueError(f"unknown chat fault {value!r}; known: {sorted(CHAT_FAULTS)}")
        if name == "image" and value is not None and value not in IMAGE_FAULTS:
            raise ValueError(f"unknown image fault {value!r}; known: {sorted(IMAGE_FAULTS)}")
        if name == "upload" and value is not None and value not in UPLOAD_FAULTS:
            raise ValueError(f"unknown upload fault {value!r}; known: {sorted(UPLOAD_FAULTS)}")
        if name in RATES:
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        object.__setattr__(self, name, value)

    def clear(self) -> None:
        """Switch every fault off, the rates included."""
        with self._lock:
            self.create = None
            self.chat = None
            self.upgrade = None
            self.image = None
            self.upload = None
            self.times = None
            for name in RATES:
                setattr(self, name, 0.0)

    def roll_create(self, rng: random.Random) -> str | None:
        """`http500` for this share of creates (create_failure_rate), else None."""
        rate = self.create_failure_rate
        return "http500" if rate > 0.0 and rng.random() < rate else None

    def roll_chat(self, rng: random.Random) -> str | None:
        """`drop_start` or `drop` for their shares of chats (one draw), else None."""
        before, after = self.drop_before_text_rate, self.drop_rate
        if before <= 0.0 and after <= 0.0:
            return None
        draw = rng.random()
        if draw < before:
            return "drop_start"
        return "drop" if draw < before + after else None

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
    draw: str | None = None  # `emulate:draw` ("yes"), `emulate:draw=quiet` (no answer text),
    # or `emulate:no_image` ("no": a drawing request answered with words only)
    image_fault: str | None = None  # one of IMAGE_FAULTS; it implies `draw`


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
    elif name == "draw":
        found.draw = raw or "yes"
    elif name == "no_image":
        found.draw = "no"
    elif name in IMAGE_FAULTS:
        found.image_fault = name
        found.draw = found.draw or "yes"
    else:
        log.warning("ignoring unknown emulate directive %r", name)


def cookie_flags(cookie: str) -> frozenset[str]:
    """The account flags in a Cookie header: every `emulate=a,b` cookie; unknown flags ignored."""
    found: set[str] = set()
    for part in cookie.split(";"):
        name, sep, value = part.partition("=")
        if not sep or name.strip() != "emulate":
            continue
        for flag in value.strip().strip('"').split(","):
            flag = flag.strip().lower()
            if flag in ACCOUNT_FLAGS or flag in IMAGE_ACCOUNT_FLAGS:
                found.add(flag)
            elif flag:
                log.warning("ignoring unknown emulate cookie flag %r", flag)
    return frozenset(found)


def account_fault(flags: frozenset[str], *, creating: bool = False) -> str | None:
    """The cookie flag that decides Bing's answer for this account, or None when healthy.

    Create only fails for `expired`; a chat fails for any flag (`expired` before `captcha` before
    `throttled`, as Bing checks the cookies first). ACCOUNT_FLAGS[flag] is Bing's (value, message).
    """
    for flag in ACCOUNT_FLAGS:
        if flag in flags and (flag == "expired" or not creating):
            return flag
    return None


def image_fault_in(text: str) -> str | None:
    """The first Image Creator fault named by an `emulate:` directive in an image prompt."""
    for match in _DIRECTIVE.finditer(text):
        if match.group(1).lower() in IMAGE_FAULTS:
            return match.group(1).lower()
    return None


def strip_directives(text: str) -> str:
    """Return the prompt with every `emulate:` token removed."""
    return " ".join(_DIRECTIVE.sub(" ", text).split())
