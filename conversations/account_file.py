"""Where accounts come from: BING_COOKIES (one account) or BING_COOKIES_FILE (JSON), re-read on change,
plus one Copilot account from COPILOT_ACCESS_TOKEN / COPILOT_COOKIES.

The file holds a JSON list; each entry is a Cookie header string, an object
`{"cookies": "...", "name": "..."}`, or a browser cookie export (a list of `{"name", "value", ...}`
objects). A file that is itself one browser export (a list of such objects) is one account.

Copilot accounts: an object with `"upstream": "copilot"` and an `access_token`, `cookies` (a string
or a browser export), or both; or a browser export whose cookies belong to copilot.microsoft.com.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from conversations.accounts import Account, AccountPool
from conversations.models import BING, COPILOT

log = logging.getLogger(__name__)


def parse_accounts(data: Any) -> list[tuple[str, str]]:
    """(name, cookie header) pairs from the file's JSON; raises ValueError on a bad shape."""
    return [(account.name, account.cookies) for account in read_accounts(data)]


def read_accounts(data: Any) -> list[Account]:
    """The accounts (Bing or Copilot) in the file's JSON; raises ValueError on a bad shape."""
    if not isinstance(data, list):
        raise ValueError("the accounts file must hold a JSON list")
    if data and all(is_browser_cookie(item) for item in data):
        data = [data]  # the whole file is one browser export
    accounts = [parse_account(item, index) for index, item in enumerate(data, 1)]
    names = [account.name for account in accounts]
    if len(set(names)) != len(names):
        raise ValueError("account names must be unique")
    return accounts


def parse_entry(item: Any, index: int) -> tuple[str, str]:
    """One entry as (name, cookie header)."""
    account = parse_account(item, index)
    return account.name, account.cookies


def parse_account(item: Any, index: int) -> Account:
    """One entry as an account."""
    default = f"account-{index}"
    if isinstance(item, str) and item.strip():
        return Account(default, item.strip())
    if isinstance(item, list) and item and all(is_browser_cookie(c) for c in item):
        return Account(default, export_header(item), upstream=COPILOT if is_copilot_export(item) else BING)
    if isinstance(item, dict):
        return parse_object(item, default, index)
    raise ValueError(f"entry {index} is neither a cookie string, an object with cookies, nor a cookie export")


def parse_object(item: dict[str, Any], default: str, index: int) -> Account:
    """`{"name", "cookies", "upstream", "access_token"}`; cookies may be a string or an export."""
    upstream = str(item.get("upstream") or BING).lower()
    if upstream not in (BING, COPILOT):
        raise ValueError(f"entry {index}: upstream must be `bing` or `copilot`")
    cookies = item.get("cookies") or ""
    if isinstance(cookies, list) and cookies and all(is_browser_cookie(c) for c in cookies):
        cookies = export_header(cookies)
    token = item.get("access_token") or ""
    if not isinstance(cookies, str) or not isinstance(token, str):
        raise ValueError(f"entry {index}: cookies and access_token must be strings (or cookies an export)")
    if upstream == BING and token:
        raise ValueError(f"entry {index}: access_token is for Copilot accounts (`\"upstream\": \"copilot\"`)")
    if not cookies.strip() and not token.strip():
        raise ValueError(f"entry {index} has neither cookies nor an access token")
    return Account(str(item.get("name") or default), cookies.strip(), upstream=upstream, token=token.strip())


def export_header(cookies: list[dict[str, Any]]) -> str:
    """A browser cookie export as a Cookie header."""
    return "; ".join(f"{c['name']}={c['value']}" for c in cookies)


def is_copilot_export(cookies: list[dict[str, Any]]) -> bool:
    """An export taken on copilot.microsoft.com (its anonymous cookie, or its domain)."""
    return any(
        c["name"] == "__Host-copilot-anon" or "copilot.microsoft.com" in str(c.get("domain") or "")
        for c in cookies
    )


def is_browser_cookie(item: Any) -> bool:
    """A cookie as browser extensions export it."""
    return isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)


class AccountSource:
    """Reads the accounts, and tells when the file changed (by modification time and size)."""

    def __init__(
        self, cookies: str, path: str | None, copilot_cookies: str = "", copilot_token: str = ""
    ) -> None:
        self.cookies, self.path = cookies, Path(path) if path else None
        self.copilot_cookies, self.copilot_token = copilot_cookies.strip(), copilot_token.strip()
        self._stamp: tuple[float, int] | None = None

    def load(self) -> list[Account]:
        """The configured accounts; raises ValueError or OSError for a broken or missing file."""
        if self.path is None:
            return self.with_copilot([Account("default", self.cookies)])
        self._stamp = self.stamp()
        accounts = read_accounts(json.loads(self.path.read_text(encoding="utf-8")))
        log.info("loaded %d account(s) from %s", len(accounts), self.path)
        return self.with_copilot(accounts)

    def with_copilot(self, accounts: list[Account]) -> list[Account]:
        """Add the account of COPILOT_ACCESS_TOKEN / COPILOT_COOKIES, named `copilot` (a file
        account of that name wins)."""
        if not (self.copilot_cookies or self.copilot_token):
            return accounts
        if any(account.name == "copilot" for account in accounts):
            log.warning("the accounts file has an account named `copilot`; COPILOT_* settings ignored")
            return accounts
        copilot = Account("copilot", self.copilot_cookies, upstream=COPILOT, token=self.copilot_token)
        return [*accounts, copilot]

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
