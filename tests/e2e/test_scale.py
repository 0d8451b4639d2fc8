"""Scaled out: two service instances on loopback sharing one real Redis (Debian's redis-server).

A chat alternating between instances costs one create; an account throttled through one instance is
skipped by the other; concurrency and rate limits count across instances; Redis stopping mid-run
degrades to fresh conversations and local state without failed requests, and recovers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai import AsyncOpenAI, OpenAI

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import Messages, eventually, user
from tests.e2e.helpers import turn as chat_turn
from tests.redis_server import RedisServer
from tests.servers import ServerThread, service_settings

ADMIN = {"Authorization": "Bearer admin-secret"}
ACCOUNTS = [
    {"name": "first", "cookies": "_U=first-secret"},
    {"name": "second", "cookies": "_U=second-secret"},
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    with server:
        yield server


@contextmanager
def instances(emulator: BingEmulator, redis: RedisServer, tmp: Path, **overrides: Any) -> Iterator[list[str]]:
    """Two services with the same accounts and one Redis (a key prefix of their own per test);
    `first` holds settings for the first instance only."""
    path = tmp / "accounts.json"
    path.write_text(json.dumps(overrides.pop("accounts", ACCOUNTS)))
    first = overrides.pop("first", {})
    values: dict[str, Any] = {
        "bing_cookies_file": str(path),
        "admin_key": "admin-secret",
        "failover_attempts": 3,
        "redis_url": redis.url,
        "redis_key_prefix": f"test-{uuid.uuid4().hex[:8]}:",
        "redis_probe_seconds": 0.1,
    }
    values.update(overrides)
    both = [service_settings(emulator, **{**values, **first}), service_settings(emulator, **values)]
    with ExitStack() as stack:
        yield [stack.enter_context(ServerThread(settings)) for settings in both]


def turn(client: OpenAI, messages: Messages, text: str, *, stream: bool = False, **extra: Any) -> str:
    """A chat turn (tests/e2e/helpers.py) whose answer must come from the emulator."""
    answer = chat_turn(client, messages, text, stream=stream, **extra)
    assert "emulator" in answer
    return answer


def accounts(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/v1/accounts", headers=ADMIN)
    assert response.status_code == 200
    return {entry["name"]: entry for entry in response.json()["data"]}


def test_a_chat_alternating_between_instances_costs_one_create(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    with instances(emulator, redis_server, tmp_path) as urls, ExitStack() as stack:
        clients = [stack.enter_context(openai_client(url)) for url in urls]
        before, sent_before = emulator.create_count, len(emulator.chat_requests)
        messages: Messages = [{"role": "system", "content": "Be brief."}]
        for index in range(6):
            turn(clients[index % 2], messages, f"question {index}", stream=index % 3 == 1)
        health = httpx.get(f"{urls[1]}/health").json()
    assert emulator.create_count == before + 1
    sent = emulator.chat_requests[sent_before:]
    assert [r["isStartOfSession"] for r in sent] == [True] + [False] * 5
    assert len({r["conversationId"] for r in sent}) == 1
    assert health["status"] == "ok" and health["shared_state"]["status"] == "ok"
    assert "redis://" not in json.dumps(health)


def test_users_with_identical_histories_never_share_a_conversation(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    with (
        instances(emulator, redis_server, tmp_path) as (a, b),
        openai_client(a) as ca,
        openai_client(b) as cb,
    ):
        alice: Messages = []
        turn(ca, alice, "a private question", user="alice")
        alice_id = emulator.chat_requests[-1]["conversationId"]
        mallory = [dict(m) for m in alice]
        turn(cb, mallory, "continue it", user="mallory")  # the same history, another caller
        assert emulator.chat_requests[-1]["isStartOfSession"] is True
        assert emulator.chat_requests[-1]["conversationId"] != alice_id
        turn(cb, alice, "my follow-up", user="alice")
        assert emulator.chat_requests[-1]["conversationId"] == alice_id
        assert emulator.chat_requests[-1]["isStartOfSession"] is False
        count = len(emulator.chat_requests)

        async def both() -> None:  # one history sent to both instances at once
            history = [*alice, {"role": "user", "content": "again"}]
            pair = [AsyncOpenAI(base_url=f"{u}/v1", api_key="sk-test", max_retries=0) for u in (a, b)]
            try:
                await asyncio.gather(*(
                    c.chat.completions.create(model="balanced", messages=history, user="alice") for c in pair
                ))  # fmt: skip
            finally:
                await asyncio.gather(*(c.close() for c in pair))

        asyncio.run(both())
    sent = emulator.chat_requests[count:]
    assert sorted(r["isStartOfSession"] for r in sent) == [False, True]
    assert sent[0]["conversationId"] != sent[1]["conversationId"]


def test_a_copilot_chat_alternating_between_instances_continues_without_cookies_in_redis(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    copilot = {
        "copilot_url": emulator.copilot_url,
        "copilot_ws_url": emulator.copilot_ws_url,
        "copilot_access_token": "copilot-token-SECRET",
        "copilot_followups_wait": 0.3,
    }
    starts, continued = emulator.copilot_start_count, emulator.copilot_continued_chat_count
    with instances(emulator, redis_server, tmp_path, **copilot) as urls, ExitStack() as stack:
        clients = [stack.enter_context(openai_client(url)) for url in urls]
        messages: Messages = []
        for index in range(3):
            messages.append({"role": "user", "content": f"copilot question {index}"})
            completion = clients[index % 2].chat.completions.create(model="copilot", messages=messages)
            messages.append({"role": "assistant", "content": completion.choices[0].message.content or ""})
        stored = redis_values(redis_server.url)
    assert emulator.copilot_start_count == starts + 1
    assert emulator.copilot_continued_chat_count == continued + 2
    assert stored and not any(b"copilot-session" in v or b"SECRET" in v for v in stored)


def redis_values(url: str) -> list[bytes]:
    """Every string value in Redis (what an operator with access would see)."""
    client = redis.Redis.from_url(url)
    try:
        return [v for k in client.scan_iter() if client.type(k) == b"string" and (v := client.get(k))]
    finally:
        client.close()


def test_an_account_throttled_via_one_instance_is_skipped_by_the_other(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    with instances(emulator, redis_server, tmp_path) as (a, b):
        emulator.faults.chat, emulator.faults.times = "throttled", 1
        with openai_client(a) as client:
            client.chat.completions.create(model="balanced", messages=user("hello"))  # fails over
        throttled = [name for name, view in accounts(a).items() if view["state"] == "cooling_down"]
        assert len(throttled) == 1
        with openai_client(b) as client:
            for index in range(4):
                client.chat.completions.create(model="balanced", messages=user(f"hi {index}"))
        seen_by_b = accounts(b)
        health_b = httpx.get(f"{b}/health").json()
    assert seen_by_b[throttled[0]]["state"] == "cooling_down"
    assert seen_by_b[throttled[0]]["uses"] == 0  # B never tried it
    assert sum(view["uses"] for view in seen_by_b.values()) == 4
    assert health_b["accounts"]["usable"] == 1


def test_an_account_a_warm_pool_found_expired_is_known_to_the_other_instance(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    sick = [*ACCOUNTS, {"name": "sick", "cookies": "_U=sick-secret; emulate=expired"}]
    with instances(emulator, redis_server, tmp_path, accounts=sick, first={"warm_pool_size": 1}) as (a, b):
        eventually(lambda: accounts(a)["sick"]["state"] == "expired", timeout=5)  # found by A's pool
        assert accounts(b)["sick"]["state"] == "expired"  # B never asked Bing about it
        assert accounts(b)["sick"]["uses"] == 0


def test_account_concurrency_counts_turns_on_every_instance(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = [{"name": "only", "cookies": "_U=only-secret"}]
    with instances(emulator, redis_server, tmp_path, accounts=one, account_concurrency=1) as urls:
        first = len(emulator.connections)

        async def together() -> None:
            clients = [AsyncOpenAI(base_url=f"{u}/v1", api_key="sk-test", max_retries=0) for u in urls]
            try:
                await asyncio.gather(*(
                    c.chat.completions.create(model="balanced", messages=user(f"emulate:words=400 q{i}"))
                    for i, c in enumerate(clients)
                ))  # fmt: skip
            finally:
                await asyncio.gather(*(c.close() for c in clients))

        asyncio.run(together())
    spans = sorted((c.opened_at, c.closed_at or 0.0) for c in emulator.connections[first:])
    assert len(spans) == 2
    assert spans[0][1] <= spans[1][0] + 0.05  # the second turn waited for the first one's slot


def test_the_rate_limit_counts_requests_on_every_instance(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    limited = {"rate_limit_per_minute": 3, "api_keys": "sk-test"}
    with (
        instances(emulator, redis_server, tmp_path, **limited) as (a, b),
        openai_client(a) as ca,
        openai_client(b) as cb,
    ):
        for client in (ca, ca, cb):
            client.chat.completions.create(model="balanced", messages=user("hi"))
        with pytest.raises(openai.RateLimitError) as refused:
            cb.chat.completions.create(model="balanced", messages=user("one too many"))
    assert "RATE_LIMIT_PER_MINUTE" in refused.value.message


def test_redis_stopping_mid_run_degrades_without_failing_requests_and_recovers(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    try:
        with instances(emulator, redis_server, tmp_path) as (a, b):
            run_through_an_outage(emulator, redis_server, a, b)
    finally:
        if not redis_server.answers():
            redis_server.start()


def run_through_an_outage(emulator: BingEmulator, redis: RedisServer, a: str, b: str) -> None:
    with openai_client(a) as ca, openai_client(b) as cb:
        alice: Messages = []
        turn(ca, alice, "before the outage", user="alice")
        turn(cb, alice, "still shared", user="alice")
        assert emulator.chat_requests[-1]["isStartOfSession"] is False
        redis.stop()
        for url in (a, b):
            health = eventually(lambda u=url: degraded(u), timeout=5)
            assert "redis unreachable" in " ".join(health["reasons"])
            assert health["shared_state"]["status"] == "unreachable"
            assert "bingapi_shared_state_up 0.0" in httpx.get(f"{url}/metrics", headers=ADMIN).text
            page = httpx.get(f"{url}/status", headers=ADMIN).json()
            assert page["status"] == "degraded" and page["shared_state"]["status"] == "unreachable"
        turn(ca, alice, "during the outage", user="alice", stream=True)  # its entry is out of reach
        assert emulator.chat_requests[-1]["isStartOfSession"] is True
        alice_id = emulator.chat_requests[-1]["conversationId"]
        bob = [dict(m) for m in alice]
        turn(ca, bob, "same history, another user", user="bob")
        assert emulator.chat_requests[-1]["isStartOfSession"] is True
        assert emulator.chat_requests[-1]["conversationId"] != alice_id
        for index in range(6):  # nothing fails while Redis is away
            turn(ca if index % 2 else cb, [], f"outage request {index}", stream=index % 2 == 0)
        turn(ca, alice, "same instance, local state", user="alice")
        assert emulator.chat_requests[-1]["conversationId"] == alice_id
        redis.start()
        for url in (a, b):
            eventually(lambda u=url: httpx.get(f"{u}/health").json()["status"] == "ok", timeout=5)
            assert "bingapi_shared_state_up 1.0" in httpx.get(f"{url}/metrics", headers=ADMIN).text
        before = emulator.create_count
        carol: Messages = []
        for index in range(4):
            turn((ca, cb)[index % 2], carol, f"after recovery {index}", user="carol")
        assert emulator.create_count == before + 1


def degraded(url: str) -> dict[str, Any] | None:
    health: dict[str, Any] = httpx.get(f"{url}/health").json()
    return health if health["status"] == "degraded" else None
