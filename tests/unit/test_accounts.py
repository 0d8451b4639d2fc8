"""Account files, health states, fair hand-out, and the error when no account can serve."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from conversations.account_file import AccountSource, parse_accounts
from conversations.accounts import Account, AccountPool, AccountState, record_outcome
from utils.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamCaptcha,
    UpstreamRateLimited,
    result_error,
)

EXPORT = [{"name": "_U", "value": "u1", "domain": ".bing.com"}, {"name": "MUID", "value": "m1"}]


def test_every_file_format() -> None:
    parsed = parse_accounts(["_U=a", {"cookies": "_U=b", "name": "work"}, EXPORT])
    assert parsed == [("account-1", "_U=a"), ("work", "_U=b"), ("account-3", "_U=u1; MUID=m1")]
    assert parse_accounts(EXPORT) == [("account-1", "_U=u1; MUID=m1")]  # one export is one account


@pytest.mark.parametrize(
    "bad", [{"cookies": "x"}, [""], [{"name": "x"}], [1], ["a", {"cookies": "b", "name": "account-1"}]]
)
def test_bad_files_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_accounts(bad)


def test_source_reads_the_file_and_sees_changes(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(["_U=a"]))
    source = AccountSource("", str(path))
    assert [a.name for a in source.load()] == ["account-1"]
    assert not source.changed()
    path.write_text(json.dumps(["_U=a", "_U=b"]))
    assert source.changed()
    assert AccountSource("_U=one", None).load()[0].cookies == "_U=one"


def test_states_follow_errors_and_success() -> None:
    account, now = Account("a", "_U=x"), time.time()
    record_outcome(account, result_error("Throttled", "", throttle_retry_after=120), now)
    assert account.state is AccountState.COOLING_DOWN and account.until == pytest.approx(now + 120)
    assert not account.usable(now) and account.usable(now + 121)
    record_outcome(account, UpstreamCaptcha("c"), now)
    assert account.state is AccountState.NEEDS_CAPTCHA
    record_outcome(account, UpstreamAuthFailed("x"), now)
    assert account.state is AccountState.EXPIRED and account.last_error == "upstream_auth_failed"
    record_outcome(account, UpstreamBadResponse("transient"), now)
    assert account.state is AccountState.EXPIRED  # a transient failure says nothing about the account
    record_outcome(account, None, now)
    assert account.state is AccountState.HEALTHY and account.failures == 4
    assert "_U=x" not in json.dumps(account.public_view(now))


def test_hand_out_is_fair_capped_and_skips_bad_accounts() -> None:
    async def scenario() -> None:
        a, b, c = Account("a", "1"), Account("b", "2"), Account("c", "3")
        record_outcome(c, UpstreamCaptcha("c"), time.time())
        pool = AccountPool([a, b, c], concurrency=1)
        first = await pool.acquire(set(), wait=0)
        second = await pool.acquire(set(), wait=0)
        assert {first.name, second.name} == {"a", "b"}  # type: ignore[union-attr]
        assert await pool.acquire(set(), wait=0.05) is None  # both busy, c needs a captcha
        waiter = asyncio.create_task(pool.acquire(set(), wait=1))
        await asyncio.sleep(0.01)
        await pool.release(first, None)  # type: ignore[arg-type]
        assert (await waiter) is first
        assert await pool.acquire({"a", "b"}, wait=0) is None

    asyncio.run(scenario())


def test_a_release_hands_its_slot_to_the_oldest_waiter_that_can_use_it() -> None:
    async def scenario() -> None:
        a, b = Account("a", "1"), Account("b", "2")
        pool = AccountPool([a, b], concurrency=1)
        held_a, held_b = await pool.acquire(set(), wait=0), await pool.acquire(set(), wait=0)
        assert held_a is a and held_b is b
        pinned_b = asyncio.create_task(pool.acquire(set(), wait=1, name="b"))
        await asyncio.sleep(0.01)
        anyone = [asyncio.create_task(pool.acquire(set(), wait=1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        await pool.release(a, None)  # the pinned waiter cannot use a: the first "anyone" gets it
        await asyncio.sleep(0.01)
        assert anyone[0].done() and anyone[0].result() is a
        assert not pinned_b.done() and not anyone[1].done() and not anyone[2].done()  # one wake per slot
        await pool.release(b, None)  # b goes to the oldest waiter that can use it: the pinned one
        await asyncio.sleep(0.01)
        assert pinned_b.done() and pinned_b.result() is b and not anyone[1].done()
        anyone[1].cancel()  # a client leaves while queued
        await asyncio.sleep(0)
        await pool.release(a, None)
        assert await anyone[2] is a  # the queue skipped the one that left
        assert len(pool._waiters) == 0

    asyncio.run(scenario())


def test_a_waiter_that_leaves_after_being_handed_a_slot_passes_it_on() -> None:
    async def scenario() -> None:
        a = Account("a", "1")
        pool = AccountPool([a], concurrency=1)
        held = await pool.acquire(set(), wait=0)
        first = asyncio.create_task(pool.acquire(set(), wait=1))
        second = asyncio.create_task(pool.acquire(set(), wait=1))
        await asyncio.sleep(0.01)
        await pool.release(held, None)  # type: ignore[arg-type]  # wakes `first`...
        first.cancel()  # ...which is cancelled before it runs
        assert await second is a  # the slot was not lost
        assert await pool.acquire(set(), wait=0.02) is None and len(pool._waiters) == 0  # timed out, clean

    asyncio.run(scenario())


def test_no_account_error_names_the_soonest_recovery() -> None:
    now = time.time()
    a, b = Account("a", "1"), Account("b", "2")
    record_outcome(a, UpstreamRateLimited("t", headers={"Retry-After": "600"}), now)
    record_outcome(b, UpstreamRateLimited("t", headers={"Retry-After": "60"}), now)
    error = AccountPool([a, b], 4).unavailable_error()
    assert error.status == 429 and 55 <= int(error.headers["Retry-After"]) <= 60
    assert "All 2 accounts" in error.message
    record_outcome(b, UpstreamCaptcha("c"), now)
    record_outcome(a, UpstreamCaptcha("c"), now)
    assert AccountPool([a, b], 4).unavailable_error().status == 503


def test_reload_keeps_state_of_unchanged_accounts() -> None:
    a, b = Account("a", "1"), Account("b", "2")
    record_outcome(a, UpstreamCaptcha("c"), time.time())
    pool = AccountPool([a, b], 4)
    added, removed = pool.replace_accounts([Account("a", "1"), Account("b", "changed"), Account("c", "3")])
    assert pool.get("a") is a and pool.get("a").state is AccountState.NEEDS_CAPTCHA  # type: ignore[union-attr]
    assert [x.name for x in added] == ["b", "c"] and removed == [b]
    assert pool.get("b").state is AccountState.HEALTHY  # type: ignore[union-attr]


def test_busy_accounts_are_not_reported_as_cooling_down() -> None:
    healthy, throttled = Account("a", "1"), Account("b", "2")
    record_outcome(throttled, UpstreamRateLimited("t", headers={"Retry-After": "3600"}), time.time())
    error = AccountPool([healthy, throttled], 1).unavailable_error()
    assert error.status == 429 and error.headers == {"Retry-After": "1"} and "busy" in error.message


def test_thread_key_survives_unencodable_input() -> None:
    from conversations.threads import thread_key

    broken = [{"role": "user", "content": "\ud800"}]
    assert thread_key("s", "m", broken) != thread_key("s", "m", broken)


def test_rest_can_be_capped() -> None:
    account, now = Account("a", "1"), time.time()
    record_outcome(account, UpstreamCaptcha("c"), now, max_rest=3)
    assert account.until == pytest.approx(now + 3)
