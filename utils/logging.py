"""Logging set-up; the service logs outcomes and codes, never prompts, cookies or keys."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Configure the root logger once, at process start; per-connection chatter stays quiet."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    quiet = max(logging.WARNING, logging.getLogger().level)
    for chatty in ("websockets", "httpx", "httpcore"):  # one line per connection or request
        logging.getLogger(chatty).setLevel(quiet)
