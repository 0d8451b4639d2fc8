"""The conversation store, its keys, the warm pool, and the continued-turn request."""

from __future__ import annotations

import asyncio
import time

from conversations.composer import ComposedPrompt
from conversations.models import MODELS
from conversations.pool import WarmPool
from conversations.request import build_chat_request
from conversations.threads import ChatThread, MemoryStore, caller_scope, thread_key
from networks.http_client import SessionIds
from utils.errors import UpstreamBadResponse

SESSION = SessionIds("51D|BingProd|x", "123", "token", "sig")


def thread(**changes: object) -> ChatThread:
    values: dict[str, object] = {"session": SESSION, "turns": 1, "limit": 30, "created_at": time.time()}
    values.update(changes)
    return ChatThread(**values)  # type: ignore[arg-type]


def test_store_takes_once_evicts_oldest_and_expires() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_entries=2, ttl=60)
        for key in "abc":
            await store.put(key, thread())
        assert len(store) == 2
        assert await store.take("a") is None  # evicted: least recently stored
        assert await store.take("b") is not None
        assert await store.take("b") is None  # taken, not read
        expiring = MemoryStore(max_entries=2, ttl=0)
        await expiring.put("k", thread())
        await asyncio.sleep(0.001)
        assert await expiring.take("k") is None
        disabled = MemoryStore(max_entries=0, ttl=60)
        await disabled.put("k", thread())
        assert len(disabled) == 0

    asyncio.run(scenario())


def test_thread_usability() -> None:
    now = time.time()
    assert thread().usable(now, max_age=3600, margin=1)
    assert not thread(created_at=now - 7200).usable(now, max_age=3600, margin=1)
    assert not thread(turns=4, limit=5).usable(now, max_age=3600, margin=1)
    assert thread(turns=4, limit=5).usable(now, max_age=3600, margin=0)
    assert thread(turns=50, limit=None).usable(now, max_age=3600, margin=1)


def test_keys_depend_on_scope_model_and_every_message() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    key = thread_key("s", "balanced", messages)
    assert key == thread_key("s", "balanced", [dict(m) for m in messages])
    assert key == thread_key("s", "balanced", [messages[0], {"role": "assistant", "content": "hello\n"}])
    assert key != thread_key("t", "balanced", messages)
    assert key != thread_key("s", "creative", messages)
    assert key != thread_key("s", "balanced", [messages[0], {"role": "assistant", "content": "hullo"}])
    assert key == thread_key(
        "s", "balanced", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, messages[1]]
    )
    assert caller_scope("cookie", "key") != caller_scope("cookie", "other")
    assert "cookie" not in caller_scope("cookie", "key")


def test_continued_turn_request() -> None:
    prompt = ComposedPrompt("next", "[system](#additional_instructions)\nrules")
    first = build_chat_request(prompt, SESSION, MODELS["precise"], "en-US")
    later = build_chat_request(prompt, SESSION, MODELS["precise"], "en-US", turn=3)
    assert first["invocationId"] == "0" and first["arguments"][0]["isStartOfSession"] is True
    assert "previousMessages" in first["arguments"][0]
    assert later["invocationId"] == "3" and later["arguments"][0]["isStartOfSession"] is False
    assert "previousMessages" not in later["arguments"][0]
    assert later["arguments"][0]["conversationId"] == SESSION.conversation_id


class FakeCreate:
    def __init__(self, fail: int = 0) -> None:
        self.calls, self.fail = 0, fail

    async def __call__(self) -> SessionIds:
        self.calls += 1
        if self.calls <= self.fail:
            raise UpstreamBadResponse("nope")
        return SessionIds(f"c{self.calls}", "1", "t")


def test_pool_fills_serves_and_refills() -> None:
    async def scenario() -> None:
        create = FakeCreate()
        pool = WarmPool(create, size=2, max_age=60)
        assert pool.take() is None  # not started
        pool.start()
        await asyncio.sleep(0.05)
        assert len(pool) == 2 and create.calls == 2
        assert pool.take() == SessionIds("c1", "1", "t")
        await asyncio.sleep(0.05)
        assert len(pool) == 2 and create.calls == 3
        await pool.stop()

    asyncio.run(scenario())


def test_pool_renews_old_conversations_and_backs_off_on_failure() -> None:
    async def scenario() -> None:
        create = FakeCreate()
        pool = WarmPool(create, size=1, max_age=0.05)
        pool.start()
        await asyncio.sleep(0.2)
        assert 3 <= create.calls <= 8  # renewed about every 50 ms, not in a tight loop
        await pool.stop()
        failing = FakeCreate(fail=100)
        broken = WarmPool(failing, size=1, max_age=60)
        broken.start()
        await asyncio.sleep(0.3)
        assert failing.calls == 1  # the first retry waits a second
        assert broken.take() is None
        await broken.stop()

    asyncio.run(scenario())


def test_disabled_pool_never_creates() -> None:
    async def scenario() -> None:
        create = FakeCreate()
        pool = WarmPool(create, size=0, max_age=60)
        pool.start()
        await asyncio.sleep(0.02)
        assert create.calls == 0
        await pool.stop()

    asyncio.run(scenario())
