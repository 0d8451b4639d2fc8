"""The account pool: upstream accounts (Bing cookie sets, Copilot tokens or cookies), each with a
health state, shared out fairly among the requests for its upstream.

An account is healthy, cooling down (Throttled, until its retry time), needing a captcha, expired
(cookies rejected) or blocked. Bad states are re-probed after a while, so an account that a human
fixed (captcha solved, cookies renewed in the file) comes back without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from conversations.models import BING, COPILOT
from conversations.pool import WarmPool
from utils.errors import (
    CAPTCHA_HELP,
    COPILOT_CLOUDFLARE_HELP,
    UpstreamAccountBlocked,
    UpstreamAuthFailed,
    UpstreamCaptcha,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamRateLimited,
)
from utils.metrics import count_upstream_error
from utils.tracking import note_account


class AccountState(StrEnum):
    HEALTHY = "healthy"
    COOLING_DOWN = "cooling_down"
    NEEDS_CAPTCHA = "needs_captcha"
    EXPIRED = "expired"
    BLOCKED = "blocked"


# How long a bad state lasts before the account is tried again (a probe), in seconds.
REPROBE_AFTER = {
    AccountState.NEEDS_CAPTCHA: 900.0,
    AccountState.EXPIRED: 3600.0,
    AccountState.BLOCKED: 6 * 3600.0,
}
DEFAULT_COOLDOWN = 3600.0


@dataclass(slots=True)
class Account:
    """One upstream account; `cookies` and `token` never leave the process (see `public_view`)."""

    name: str
    cookies: str = field(repr=False)
    state: AccountState = AccountState.HEALTHY
    until: float = 0.0  # wall clock when a bad state ends
    last_error: str | None = None
    last_error_at: float | None = None
    uses: int = 0
    failures: int = 0
    in_flight: int = 0
    pool: WarmPool | None = field(default=None, repr=False)
    upstream: str = BING  # "bing" | "copilot"
    token: str = field(default="", repr=False)  # Copilot's access token (Authorization: Bearer)

    @property
    def fingerprint(self) -> str:
        """A digest of the credentials: a conversation only continues under those that made it."""
        return hashlib.sha256(f"{self.upstream}\x00{self.cookies}\x00{self.token}".encode()).hexdigest()[:16]

    @property
    def signed_in(self) -> bool:
        """Bing: a `_U` cookie; Copilot: an access token."""
        return bool(self.token) if self.upstream == COPILOT else "_U=" in self.cookies

    def usable(self, now: float) -> bool:
        """Healthy, or a bad state whose time is up (then the next turn is its probe)."""
        return self.state is AccountState.HEALTHY or now >= self.until

    def public_view(self, now: float) -> dict[str, Any]:
        """What an operator may see: never the cookies."""
        return {
            "name": self.name,
            "upstream": self.upstream,
            "state": self.state.value,
            "usable": self.usable(now),
            "retry_at": self.until if self.state is not AccountState.HEALTHY else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "uses": self.uses,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "signed_in": self.signed_in,
            "warm_conversations": len(self.pool) if self.pool is not None else 0,
        }


def state_for(error: UpstreamError) -> AccountState | None:
    """The account state an upstream error implies; None for errors that say nothing about it."""
    if isinstance(error, UpstreamRateLimited):
        return AccountState.COOLING_DOWN
    if isinstance(error, UpstreamCaptcha):
        return AccountState.NEEDS_CAPTCHA
    if isinstance(error, UpstreamAuthFailed):
        return AccountState.EXPIRED
    if isinstance(error, UpstreamAccountBlocked):
        return AccountState.BLOCKED
    return None


def retry_seconds(error: UpstreamError) -> float:
    """How long a throttled account cools down: Bing's Retry-After, else an hour."""
    try:
        return float(error.headers.get("Retry-After", DEFAULT_COOLDOWN))
    except ValueError:
        return DEFAULT_COOLDOWN


@dataclass(slots=True)
class SlotWaiter:
    """A request waiting for a free slot, and which accounts it can take."""

    exclude: set[str]
    name: str | None
    upstream: str
    woken: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def admits(self, account: Account) -> bool:
        """Whether this waiter could take a slot on `account`."""
        return (account.upstream == self.upstream and account.name not in self.exclude
                and (self.name is None or account.name == self.name))


class AccountPool:
    """Hands out usable accounts (least used first, within a per-account concurrency cap)."""

    def __init__(self, accounts: Iterable[Account], concurrency: int, max_rest: float = 0.0) -> None:
        self.accounts: dict[str, Account] = {a.name: a for a in accounts}
        self.concurrency = max(concurrency, 1)
        self.max_rest = max_rest
        self._waiters: deque[SlotWaiter] = deque()  # requests waiting for a free slot, oldest first

    def __len__(self) -> int:
        return len(self.accounts)

    def get(self, name: str) -> Account | None:
        """The account called `name`, if it is still configured."""
        return self.accounts.get(name)

    async def sync(self) -> None:
        """Adopt account health shared by other instances (nothing to do in one process)."""

    def any_usable(self) -> bool:
        """True when at least one account can serve now."""
        now = time.time()
        return any(a.usable(now) for a in self.accounts.values())

    def serving(self, upstream: str) -> list[Account]:
        """The accounts of one upstream."""
        return [a for a in self.accounts.values() if a.upstream == upstream]

    async def acquire(
        self, exclude: set[str], wait: float, name: str | None = None, *, upstream: str = BING
    ) -> Account | None:
        """A usable account of `upstream` not in `exclude` (or the one called `name`), waiting up to
        `wait` s for a free slot; None when none is usable at all."""
        deadline = time.monotonic() + wait
        while True:
            candidates = self._candidates(exclude, name, upstream)
            if not candidates:
                return None
            free = [a for a in candidates if a.in_flight < self.concurrency]
            if free:
                account = min(free, key=lambda a: (a.in_flight, a.uses))
                account.in_flight += 1
                account.uses += 1
                note_account(account.name)  # the request's log line names where its turn ran
                return account
            if not await self._wait_for_slot(SlotWaiter(exclude, name, upstream), deadline):
                return None

    async def release(self, account: Account, error: UpstreamError | None) -> None:
        """Give the slot back and record the outcome of the turn on its account."""
        record_outcome(account, error, time.time(), self.max_rest)
        account.in_flight = max(account.in_flight - 1, 0)
        self._hand_over(account)

    async def report(self, account: Account, error: UpstreamError) -> None:
        """Record a failure seen outside a turn (a warm pool's create) on its account."""
        record_outcome(account, error, time.time(), self.max_rest)

    def unavailable_error(self, upstream: str = BING) -> UpstreamError:
        """The error for 'no account of `upstream` can serve': none configured; busy (retry in a
        second) while some account is usable; else the soonest-recovering account's reason."""
        now = time.time()
        mine = self.serving(upstream)
        if not mine:
            return not_configured_error(upstream)
        if any(a.usable(now) for a in mine):  # only busy, not broken
            return UpstreamRateLimited(
                "Every usable account is busy (ACCOUNT_CONCURRENCY); retry shortly.",
                headers={"Retry-After": "1"},
            )
        soonest = min(mine, key=lambda a: a.until)
        wait = str(max(int(soonest.until - now), 1))
        return error_for_state(soonest.state, wait, len(mine), upstream)

    def replace_accounts(self, fresh: list[Account]) -> tuple[list[Account], list[Account]]:
        """Adopt a re-read account list: unchanged accounts (same name and cookies) keep their state.

        Returns (added, removed) so the caller can start and stop their warm pools.
        """
        merged: dict[str, Account] = {}
        added: list[Account] = []
        for account in fresh:
            previous = self.accounts.get(account.name)
            if previous is not None and previous.fingerprint == account.fingerprint:
                merged[account.name] = previous
            else:
                merged[account.name] = account
                added.append(account)
        removed = [a for name, a in self.accounts.items() if merged.get(name) is not a]
        self.accounts = merged
        self._hand_over_free()  # a new account's slots are free at once
        return added, removed

    def public_view(self) -> list[dict[str, Any]]:
        """Every account as an operator may see it."""
        now = time.time()
        return [a.public_view(now) for a in self.accounts.values()]

    def _candidates(self, exclude: set[str], name: str | None, upstream: str) -> list[Account]:
        now = time.time()
        if name is not None:
            account = self.accounts.get(name)
            return [account] if account is not None and account.usable(now) else []
        return [
            a
            for a in self.accounts.values()
            if a.upstream == upstream and a.name not in exclude and a.usable(now)
        ]

    async def _wait_for_slot(self, waiter: SlotWaiter, deadline: float) -> bool:
        """Queue until a release hands this waiter a slot it can use (True), or the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(left):
                await waiter.woken
        except TimeoutError:
            self._abandon(waiter)
            return False
        except BaseException:  # cancelled: the client left
            self._abandon(waiter)
            raise
        return True

    def _abandon(self, waiter: SlotWaiter) -> None:
        """A waiter leaves the queue; if it had just been handed a slot, the next in line gets it."""
        if waiter.woken.done() and not waiter.woken.cancelled():
            self._hand_over_free()
        else:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _hand_over(self, account: Account) -> None:
        """Wake the oldest waiter that can use `account`'s free slot (one wake per slot, so a
        release costs O(1) rather than waking every waiter)."""
        if account.in_flight >= self.concurrency:
            return
        for waiter in self._waiters:
            if waiter.admits(account):
                self._waiters.remove(waiter)
                waiter.woken.set_result(None)
                return

    def _hand_over_free(self) -> None:
        """Offer every account's free slots to the waiters (after a woken waiter left)."""
        for account in self.accounts.values():
            self._hand_over(account)


def record_outcome(account: Account, error: UpstreamError | None, now: float, max_rest: float = 0.0) -> None:
    """Healthy after a success; the error's state (and how long it lasts, capped by `max_rest` when
    that is set) after a failure."""
    if error is None:
        account.state, account.until = AccountState.HEALTHY, 0.0
        return
    account.failures += 1
    account.last_error, account.last_error_at = error.code, now
    count_upstream_error(error.code)  # /metrics: bingapi_upstream_errors_total
    state = state_for(error)
    if state is None:
        return  # transient: says nothing about the account
    account.state = state
    lasts = retry_seconds(error) if state is AccountState.COOLING_DOWN else REPROBE_AFTER[state]
    account.until = now + (min(lasts, max_rest) if max_rest > 0 else lasts)


def error_for_state(state: AccountState, retry_after: str, total: int, upstream: str = BING) -> UpstreamError:
    """What the client hears when no account can serve, by the best account's state."""
    service = "Copilot" if upstream == COPILOT else "Bing"
    kind = "Copilot " if upstream == COPILOT else ""
    who = f"The {kind}account is" if total == 1 else f"All {total} {kind}accounts are"
    if state is AccountState.COOLING_DOWN:
        return UpstreamRateLimited(
            f"{who} cooling down after {service} throttled it; retry in {retry_after} s.",
            headers={"Retry-After": retry_after, "x-should-retry": "false"},
        )
    if state is AccountState.NEEDS_CAPTCHA:
        help_text = COPILOT_CLOUDFLARE_HELP if upstream == COPILOT else CAPTCHA_HELP
        return UpstreamCaptcha(
            f"{who} waiting for a captcha to be solved (see GET /v1/accounts). {help_text}",
            headers={"x-should-retry": "false"},
        )
    if state is AccountState.EXPIRED:
        what = "credentials" if upstream == COPILOT else "cookies"
        return UpstreamAuthFailed(f"{who} using {what} {service} rejects: renew them (see GET /v1/accounts).")
    return UpstreamAccountBlocked(f"{who} blocked by {service}.", headers={"x-should-retry": "false"})


def not_configured_error(upstream: str) -> UpstreamNotConfigured:
    """No account at all for the upstream a model needs."""
    if upstream == COPILOT:
        return UpstreamNotConfigured(
            "No Copilot account is configured, so the Copilot models cannot answer: set "
            "COPILOT_ACCESS_TOKEN or COPILOT_COOKIES, or add a Copilot account to BING_COOKIES_FILE.",
            headers={"x-should-retry": "false"},
        )
    return UpstreamNotConfigured(
        "No Bing account is configured, so the Bing models cannot answer: set BING_COOKIES or add a "
        "Bing account to BING_COOKIES_FILE.",
        headers={"x-should-retry": "false"},
    )
