"""Server-sent events wire format: `data:` lines only, never `event:` names (OPENAI.md §4.4)."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def encode_data(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying `payload` as one line of compact JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"
