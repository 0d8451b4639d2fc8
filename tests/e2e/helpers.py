"""Small helpers for end-to-end assertions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from emulator import BingEmulator

MARKER = re.compile(r"\[\^\d+\^\]")


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
