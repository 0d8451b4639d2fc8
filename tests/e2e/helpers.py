"""Small helpers for end-to-end assertions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from openai import OpenAI

from emulator import BingEmulator

MARKER = re.compile(r"\[\^\d+\^\]")
Messages = list[dict[str, Any]]


def last_answer(emulator: BingEmulator) -> str:
    """The emulator's latest intended answer, as the client should see it (markers removed)."""
    return MARKER.sub("", emulator.connections[-1].answer_text)


def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll until `check()` is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def user(text: str) -> list[dict[str, str]]:
    """A one-message conversation."""
    return [{"role": "user", "content": text}]


def turn(client: OpenAI, messages: Messages, text: str, *, stream: bool = False, **extra: Any) -> str:
    """Send the history plus `text`, append the answer as returned, and return it."""
    messages.append({"role": "user", "content": text})
    if stream:
        chunks = client.chat.completions.create(model="balanced", messages=messages, stream=True, **extra)
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = client.chat.completions.create(model="balanced", messages=messages, **extra)
        answer = completion.choices[0].message.content or ""
    messages.append({"role": "assistant", "content": answer})
    return answer
