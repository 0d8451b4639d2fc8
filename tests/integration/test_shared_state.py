"""The Redis-backed pieces on their own against a real redis-server: leases, the store, fallback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from conversations.accounts import Account, AccountPool
from conversations.shared_accounts import SharedAccountPool
from conversations.shared_slots import FreedSlots
from conversations.shared_store import RedisStore, account_secret, decode_thread, encode_thread
from conversations.threads import ChatThread
from networks.copilot import CopilotSession
from networks.http_client import SessionIds
from tests.redis_server import RedisServer, free_port
from utils.redis_client import SharedRedis, SharedStateDown, describe
from utils.settings import Settings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as url:
        yield url


@asynccontextmanager
async def shared(url: str, prefix: str, **overrides: Any) -> AsyncIterator[SharedRedis]:
    values: dict[str, Any] = {"redis_url": url, "redis_key_prefix": prefix, "redis_probe_seconds": 0.1}
    values.update(overrides)
    connection = SharedRedis(Settings(_env_file=None, **values))
    await connection.start()
    try:
        yield connection
    finally:
        await connection.close()


ACCOUNTS = AccountPool([Account("acct", "_U=x")], 1)


def thread(name: str = "a", turns: int = 1) -> ChatThread:
    session = SessionIds(f"conv-{name}", "client", "token+/=", "sig")
    return ChatThread(session, turns, 30, 1.0e9, "acct", "f" * 16)


def prefix() -> str:
    return f"unit-{uuid.uuid4().hex[:8]}:"


def test_a_lease_of_a_crashed_instance_expires_and_a_live_one_is_renewed(redis_url: str) -> None:
    async def scenario() -> None:
        key = prefix()
        async with shared(redis_url, key) as one, shared(redis_url, key) as two:
            crashed = SharedAccountPool([Account("only", "_U=x")], 1, one, lease_seconds=1.0)
            other = SharedAccountPool([Account("only", "_U=x")], 1, two, lease_seconds=1.0)
            assert await crashed.acquire(set(), 0.0) is not None  # never released, never renewed
            assert await other.acquire(set(), 0.2) is None
            assert await other.acquire(set(), 2.0) is not None  # the lease ran out
            other.start()  # renewed every third of a second: it outlives its 1 s lease
            await asyncio.sleep(1.5)
            assert await crashed.acquire(set(), 0.0) is None
            await other.release(other.accounts["only"], None)
            assert await crashed.acquire(set(), 0.5) is not None
            await other.stop()

    asyncio.run(scenario())


def test_the_store_takes_once_and_keeps_its_bound_and_ttl(redis_url: str) -> None:
    async def scenario() -> None:
        async with shared(redis_url, prefix()) as connection:
            store = RedisStore(connection, max_entries=3, ttl=60, accounts=ACCOUNTS)
            for index in range(5):
                await store.put(f"key-{index}", thread(str(index)))
            kept = [await store.take(f"key-{i}") is not None for i in range(5)]
            assert kept == [False, False, True, True, True]
            assert await store.take("key-4") is None  # taken, not read
            short = RedisStore(connection, max_entries=3, ttl=0.2, accounts=ACCOUNTS)
            await short.put("brief", thread())
            await asyncio.sleep(0.35)
            assert await short.take("brief") is None
            raw = await connection.client.keys(f"{connection.prefix}*")
            assert not any(b"key-" in name or b"conv-" in name for name in raw)  # hashed key names

    asyncio.run(scenario())


def test_without_redis_everything_falls_back_to_this_process() -> None:
    async def scenario() -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        async with shared(url, prefix(), redis_connect_timeout=0.2) as connection:
            assert connection.status()["status"] == "unreachable"
            with pytest.raises(SharedStateDown):
                await connection.run(lambda r: r.ping())
            store = RedisStore(connection, max_entries=3, ttl=60, accounts=ACCOUNTS)
            await store.put("k", thread())
            assert await store.take("k") == thread()
            pool = SharedAccountPool([Account("only", "_U=x")], 1, connection, lease_seconds=1.0)
            account = await pool.acquire(set(), 0.0)
            assert account is not None and account.in_flight == 1
            assert await pool.acquire(set(), 0.0) is None  # the local cap still holds
            await pool.release(account, None)
            assert account.in_flight == 0

    asyncio.run(scenario())


def test_stored_threads_hold_ids_and_counters_only() -> None:
    secret = account_secret(Account("acct", "_U=x"))
    stored = encode_thread(thread(), secret)
    assert stored is not None and decode_thread(stored, lambda name: secret) == thread()
    assert decode_thread(b"not json", lambda name: secret) is None
    assert decode_thread(b"{}", lambda name: secret) is None
    assert set(orjson.loads(stored)) == {"u", "c", "i", "t", "s", "n", "l", "at", "a", "f"}


def test_copilot_cookies_are_stored_encrypted_under_the_account_credentials() -> None:
    session = CopilotSession("copilot-conv", "__cf_bm=start-cookie-secret", 7)
    copilot = ChatThread(session, 1, 7, 1.0e9, "acct", "f" * 16)
    stored = encode_thread(copilot, b"copilot\x00cookies\x00token")
    assert stored is not None and b"start-cookie-secret" not in stored
    assert decode_thread(stored, lambda name: b"copilot\x00cookies\x00token") == copilot
    assert decode_thread(stored, lambda name: b"copilot\x00renewed\x00token") is None  # starts fresh
    assert decode_thread(stored, lambda name: None) is None  # the account is gone
    assert encode_thread(copilot, None) is None  # kept in this process instead


def test_outage_reasons_never_carry_credentials() -> None:
    reason = describe(ConnectionError("cannot reach redis://user:hunter2@10.0.0.5:6379/0"))
    assert "hunter2" not in reason and reason.startswith("ConnectionError")


def test_redis_server_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        RedisServer(tmp_path)


def test_waiters_are_woken_oldest_ticket_first_and_survive_timeouts() -> None:
    async def scenario() -> None:
        slots = FreedSlots(SharedRedis(Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0")))
        first, second = 1, 2
        deadline = time.monotonic() + 5
        assert await slots.wait(deadline, slots.generation, first)  # a poll tick: nobody announced
        assert len(slots) == 0
        woken: list[int] = []

        async def waiter(ticket: int) -> None:
            await slots.wait(deadline, slots.generation, ticket)
            woken.append(ticket)

        tasks = [asyncio.create_task(waiter(t)) for t in (second, first)]  # the younger queues first
        await asyncio.sleep(0.01)
        slots.announce()
        await asyncio.sleep(0.01)
        assert woken == [first]
        slots.announce()
        await asyncio.gather(*tasks)
        assert woken == [first, second]
        seen = slots.generation
        slots.announce()  # nobody waits: the next waiter sees it moved and retries at once
        started = time.monotonic()
        assert await slots.wait(deadline, seen, 3)
        assert time.monotonic() - started < 0.05
        assert not await slots.wait(time.monotonic() - 1, slots.generation, 4)

    asyncio.run(scenario())


def test_a_redis_password_never_shows_in_settings_or_health() -> None:
    settings = Settings(_env_file=None, redis_url="redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(settings)
    connection = SharedRedis(settings)
    connection.mark_down(ConnectionError("redis://:hunter2@127.0.0.1:1/0 refused"))
    assert "hunter2" not in str(connection.status())


def test_waiting_requests_are_served_in_arrival_order_across_instances(redis_url: str) -> None:
    async def scenario() -> None:
        key = prefix()
        async with shared(redis_url, key) as one, shared(redis_url, key) as two:
            first = SharedAccountPool([Account("only", "_U=x")], 1, one, lease_seconds=5.0)
            second = SharedAccountPool([Account("only", "_U=x")], 1, two, lease_seconds=5.0)
            holder = await first.acquire(set(), 0.0)
            assert holder is not None
            waiting = asyncio.create_task(second.acquire(set(), 3.0))  # not listening: polls
            await asyncio.sleep(0.1)
            await first.release(holder, None)
            assert await first.acquire(set(), 0.0) is None  # a newcomer does not jump the queue
            served = await waiting
            assert served is not None
            assert await first.acquire(set(), 0.0) is None  # the slot is the waiter's
            await second.release(served, None)
            assert await first.acquire(set(), 0.0) is not None

    asyncio.run(scenario())
