"""Where accounts come from: BING_COOKIES (one account) or BING_COOKIES_FILE (JSON), re-read on change.

The file holds a JSON list; each entry is a Cookie header string, an object
`{"cookies": "...", "name": "..."}`, or a browser cookie export (a list of `{"name", "value", ...}`
objects). A file that is itself one browser export (a list of such objects) is one account.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from conversations.accounts import Account, AccountPool

log = logging.getLogger(__name__)


def parse_accounts(data: Any) -> list[tuple[str, str]]:
    """(name, cookie header) pairs from the file's JSON; raises ValueError on a bad shape."""
    if not isinstance(data, list):
        raise ValueError("the accounts file must hold a JSON list")
    if data and all(is_browser_cookie(item) for item in data):
        data = [data]  # the whole file is one browser export
    accounts = [parse_entry(item, index) for index, item in enumerate(data, 1)]
    names = [name for name, _ in accounts]
    if len(set(names)) != len(names):
        raise ValueError("account names must be unique")
    return accounts


def parse_entry(item: Any, index: int) -> tuple[str, str]:
    """One entry as (name, cookie header)."""
    default = f"account-{index}"
    if isinstance(item, str) and item.strip():
        return default, item.strip()
    if isinstance(item, dict) and isinstance(item.get("cookies"), str) and item["cookies"].strip():
        return str(item.get("name") or default), item["cookies"].strip()
    if isinstance(item, list) and item and all(is_browser_cookie(c) for c in item):
        return default, "; ".join(f"{c['name']}={c['value']}" for c in item)
    raise ValueError(f"entry {index} is neither a cookie string, an object with cookies, nor a cookie export")


def is_browser_cookie(item: Any) -> bool:
    """A cookie as browser extensions export it."""
    return isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)


class AccountSource:
    """Reads the accounts, and tells when the file changed (by modification time and size)."""

    def __init__(self, cookies: str, path: str | None) -> None:
        self.cookies, self.path = cookies, Path(path) if path else None
        self._stamp: tuple[float, int] | None = None

    def load(self) -> list[Account]:
        """The configured accounts; raises ValueError or OSError for a broken or missing file."""
        if self.path is None:
            return [Account("default", self.cookies)]
        self._stamp = self.stamp()
        pairs = parse_accounts(json.loads(self.path.read_text(encoding="utf-8")))
        log.info("loaded %d account(s) from %s", len(pairs), self.path)
        return [Account(name, cookies) for name, cookies in pairs]

    def changed(self) -> bool:
        """True when the file's modification time or size moved since the last load."""
        return self.path is not None and self.stamp() != self._stamp

    def stamp(self) -> tuple[float, int] | None:
        """The file's (mtime, size), or None when it is missing."""
        try:
            info = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return (info.st_mtime, info.st_size) if info else None


class AccountWatcher:
    """Re-reads the accounts file when it changes (checked at most every few seconds), no restart."""

    CHECK_EVERY = 2.0

    def __init__(self, source: AccountSource, pool: AccountPool) -> None:
        self.source, self.pool = source, pool
        self._checked = time.monotonic()

    def refresh(self) -> tuple[list[Account], list[Account]]:
        """(added, removed) accounts when the file changed and parsed; ([], []) otherwise."""
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return [], []
        self._checked = now
        if not self.source.changed():
            return [], []
        try:
            fresh = self.source.load()
        except (OSError, ValueError) as exc:
            log.warning(
                "accounts file unusable (%s); keeping %d account(s)", type(exc).__name__, len(self.pool)
            )
            return [], []
        return self.pool.replace_accounts(fresh)
