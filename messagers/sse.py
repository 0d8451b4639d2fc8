"""Server-sent events wire format: `data:` lines only, never `event:` names (OPENAI.md §4.4)."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def encode_data(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying `payload` as one line of compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
