"""Token estimates for `usage`: Bing reports none, and nothing may download a tokenizer."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """About 4 ASCII characters per token, and one token per non-ASCII character (CJK, emoji)."""
    if not text:
        return 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)
