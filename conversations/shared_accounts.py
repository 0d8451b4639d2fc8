"""The account pool shared through Redis: one view of account health, one cap on turns per account.

Every instance (worker or replica) reads the same accounts. In Redis, each account has:

- a health record (state, until when, last error code, when it changed): an account that one
  instance finds throttled, expired or blocked (in a turn, or while its warm pool creates ahead) is
  skipped by all of them, and its re-probe time is the same everywhere;
- a set of turn leases: ACCOUNT_CONCURRENCY counts turns across all instances. A lease expires
  after ACCOUNT_LEASE_SECONDS unless its instance renews it (every third of that), so a crashed
  instance cannot keep slots.

Choosing an account and taking its lease is one Lua script (one round trip). Requests that must
wait for a slot queue in Redis and are served first come, first served across instances: a freed
slot is announced on a channel, and each instance wakes its request that is next in that queue.
The account key is a salted hash of its name and credentials digest; credentials never go to Redis.
While Redis is unreachable, the in-process pool (`AccountPool`) decides alone, and its failures
stay local.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from conversations.accounts import Account, AccountPool, AccountState, state_for
from conversations.models import BING
from conversations.shared_scripts import CLAIM, LEAVE, RENEW, SETTLE
from conversations.shared_slots import FreedSlots
from utils.errors import UpstreamError
from utils.redis_client import SharedRedis, SharedStateDown
from utils.tracking import note_account

HEALTH_KEEP_SECONDS = 86400.0  # a health record outlives its `until` by this much
WAITER_STALE_MS = 2000  # a waiting request looks at least every FALLBACK_POLL_SECONDS; gone after this


class SharedAccountPool(AccountPool):
    """An `AccountPool` whose health and concurrency are shared through Redis."""

    def __init__(
        self,
        accounts: Iterable[Account],
        concurrency: int,
        shared: SharedRedis,
        lease_seconds: float,
        max_rest: float = 0.0,
    ) -> None:
        super().__init__(accounts, concurrency, max_rest)
        self.shared = shared
        self.lease_ms = max(int(lease_seconds * 1000), 1000)
        self.instance = uuid.uuid4().hex[:12]
        self._serial = itertools.count()
        self._leases: dict[str, list[tuple[str, str]]] = {}  # account name -> (lease set, lease id)
        self._changed: dict[str, float] = {}  # account name -> when this instance last changed its state
        self._keys: dict[tuple[str, ...], str] = {}
        self._keys_salt = b""
        self._claim = shared.client.register_script(CLAIM)
        self._renew = shared.client.register_script(RENEW)
        self._settle_script = shared.client.register_script(SETTLE)
        self._leave_script = shared.client.register_script(LEAVE)
        queue = f"{shared.prefix}slot-queue"
        self._queue_keys = [queue, f"{queue}:seen", f"{queue}:serial"]
        self._renewer: asyncio.Task[None] | None = None
        self.slots = FreedSlots(shared)

    def start(self) -> None:
        """Begin renewing this instance's leases and listening for freed slots, in the background."""
        self.slots.start()
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")

    async def stop(self) -> None:
        """Stop renewing (leases then expire on their own) and listening."""
        await self.slots.stop()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    async def acquire(
        self, exclude: set[str], wait: float, name: str | None = None, *, upstream: str = BING
    ) -> Account | None:
        """As `AccountPool.acquire`, with health and slots shared across instances."""
        deadline = time.monotonic() + wait
        waiter = f"{self.instance}:{next(self._serial)}"
        queued = False
        try:
            while True:
                candidates = self._configured(exclude, name, upstream)
                if not candidates:
                    return None
                seen = self.slots.generation
                try:
                    chosen, place = await self._claim_one(candidates, waiter)
                except SharedStateDown:
                    queued = False  # an unreachable queue forgets its stale waiters by itself
                    left = max(deadline - time.monotonic(), 0.0)
                    return await super().acquire(exclude, left, name, upstream=upstream)
                if chosen is not None:
                    queued = False
                    chosen.in_flight += 1
                    chosen.uses += 1
                    note_account(chosen.name)  # the request's log line names where its turn ran
                    return chosen
                queued = place > 0  # woken in queue order, the same on every instance
                if not queued or not await self.slots.wait(deadline, seen, place):
                    return None
        finally:
            if queued:
                await self._leave(waiter)

    async def release(self, account: Account, error: UpstreamError | None) -> None:
        """Free the slot (here and in Redis) and share the outcome when it changed the account."""
        was = account.state
        lease = self._pop_lease(account.name)
        await super().release(account, error)
        await self._share(account, was, error, lease)

    async def report(self, account: Account, error: UpstreamError) -> None:
        """Record a warm pool's failure, and share it when it changed the account."""
        was = account.state
        await super().report(account, error)
        await self._share(account, was, error, None)

    async def _share(
        self, account: Account, was: AccountState, error: UpstreamError | None, lease: tuple[str, str] | None
    ) -> None:
        """Drop the lease and publish the account's health if the outcome changed it."""
        changed = (error is not None and state_for(error) is not None) or (
            error is None and was is not AccountState.HEALTHY
        )
        if changed:
            self._changed[account.name] = time.time()
        if lease is None and not changed:
            return
        with contextlib.suppress(SharedStateDown):
            await self.shared.run(lambda r: self._settle(r, account, lease, changed))

    async def sync(self) -> None:
        """Adopt the shared health of every account (for /health and the operator view)."""
        accounts = list(self.accounts.values())
        if not accounts:
            return
        keys = [self._key("health", a) for a in accounts]
        with contextlib.suppress(SharedStateDown):
            records = await self.shared.run(lambda r: r.mget(keys))
            for account, record in zip(accounts, records, strict=True):
                self._adopt(account, record)

    def _configured(self, exclude: set[str], name: str | None, upstream: str) -> list[Account]:
        """The accounts to consider, by configuration only: their health is read in Redis."""
        if name is not None:
            account = self.accounts.get(name)
            return [account] if account is not None else []
        ordered = [a for a in self.accounts.values() if a.upstream == upstream and a.name not in exclude]
        return sorted(ordered, key=lambda a: (a.in_flight, a.uses))

    async def _claim_one(self, candidates: list[Account], waiter: str) -> tuple[Account | None, int]:
        """One script: adopt each candidate's shared health, lease the least busy usable one unless
        others wait ahead (then queue as `waiter`)."""
        lease_id = f"{self.instance}:{next(self._serial)}"
        slot_keys = [self._key("slots", a) for a in candidates]
        keys = [*self._queue_keys, *slot_keys, *(self._key("health", a) for a in candidates)]
        args: list[str | int | float] = [self.concurrency, self.lease_ms, lease_id, time.time()]
        args += [waiter, WAITER_STALE_MS]
        reply = await self.shared.run(lambda r: self._claim(keys=keys, args=args, client=r))
        chosen, usable, place, records = int(reply[0]), int(reply[1]), int(reply[2]), reply[3:]
        for account, record in zip(candidates, records, strict=True):
            self._adopt(account, record or None)
        if chosen == 0:
            return None, place if usable else -1
        account = candidates[chosen - 1]
        self._leases.setdefault(account.name, []).append((slot_keys[chosen - 1], lease_id))
        return account, 0

    async def _leave(self, waiter: str) -> None:
        """Leave the waiting queue (a failure here is harmless: stale waiters are dropped)."""
        keys = self._queue_keys[:2]
        with contextlib.suppress(SharedStateDown):
            await self.shared.run(lambda r: self._leave_script(keys=keys, args=[waiter], client=r))

    def _adopt(self, account: Account, record: Any) -> None:
        """Take the shared record unless this instance changed the account more recently."""
        if not isinstance(record, bytes) or not record:
            return
        try:
            health = orjson.loads(record)
            state, at = AccountState(health["state"]), float(health["at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        mine = self._changed.get(account.name, 0.0)
        if account.state is not AccountState.HEALTHY:  # maybe benched here by its warm pool
            mine = max(mine, account.last_error_at or 0.0)
        if at < mine:
            return
        account.state, account.until = state, float(health.get("until") or 0.0)
        if health.get("error"):
            account.last_error, account.last_error_at = str(health["error"]), health.get("error_at")

    async def _settle(
        self, client: Any, account: Account, lease: tuple[str, str] | None, changed: bool
    ) -> None:
        """Drop the lease and publish the account's new health: one script, one round trip."""
        slots, lease_id = lease if lease is not None else (self._key("slots", account), "")
        keep = max(account.until - time.time(), 0.0) + HEALTH_KEEP_SECONDS
        record = health_record(account) if changed else b""
        args: list[str | bytes | int] = [lease_id, self.slots.channel, record]
        args.append(int(keep * 1000))
        await self._settle_script(keys=[slots, self._key("health", account)], args=args, client=client)

    def _pop_lease(self, name: str) -> tuple[str, str] | None:
        held = self._leases.get(name)
        if not held:
            return None
        lease = held.pop()
        if not held:
            del self._leases[name]
        return lease

    def _key(self, kind: str, account: Account) -> str:
        """The account's Redis key of `kind` (cached: hashing on every request is wasted work)."""
        if self._keys_salt != self.shared.salt:  # Redis restarted empty, with a new salt
            self._keys.clear()
            self._keys_salt = self.shared.salt
        identity = (kind, account.name, account.upstream, account.cookies, account.token)
        cached = self._keys.get(identity)
        if cached is None:
            cached = self.shared.key(f"account-{kind}", f"{account.name}\x00{account.fingerprint}")
            self._keys[identity] = cached
        return cached

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(SharedStateDown):
                await self.renew()

    async def renew(self) -> None:
        """Push back the expiry of every lease this instance holds (raises SharedStateDown)."""
        held = [lease for leases in self._leases.values() for lease in leases]
        if held:
            keys = [k for k, _ in held]
            args: list[str | int] = [self.lease_ms, *(i for _, i in held)]
            await self.shared.run(lambda r: self._renew(keys=keys, args=args, client=r))


def health_record(account: Account) -> bytes:
    """What Redis keeps about an account's health: its state and error code, never its cookies."""
    return orjson.dumps(
        {
            "state": account.state.value,
            "until": account.until,
            "error": account.last_error,
            "error_at": account.last_error_at,
            "at": time.time(),
        }
    )
