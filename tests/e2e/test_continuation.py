"""Continuing Bing conversations across a resend-everything chat: hits, misses, and never mixing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI, OpenAI

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import Messages, eventually, turn
from tests.servers import ServerThread, service_settings


def test_five_turns_cost_one_create(client: OpenAI, emulator: BingEmulator) -> None:
    before, sent_before = emulator.create_count, len(emulator.chat_requests)
    messages: Messages = [{"role": "system", "content": "Be a pirate."}]
    for index in range(5):
        turn(client, messages, f"question {index}", stream=index % 2 == 1)
    assert emulator.create_count == before + 1
    sent = emulator.chat_requests[sent_before:]
    assert [r["isStartOfSession"] for r in sent] == [True, False, False, False, False]
    assert len({r["conversationId"] for r in sent}) == 1
    assert [r["message"]["text"] for r in sent] == [f"question {i}" for i in range(5)]
    assert "Be a pirate." in sent[0]["previousMessages"][0]["description"]
    assert all("previousMessages" not in r for r in sent[1:])


def test_edited_history_starts_fresh_with_the_history_as_context(
    client: OpenAI, emulator: BingEmulator
) -> None:
    messages: Messages = []
    turn(client, messages, "first")
    messages[-1]["content"] = "an answer the user edited"
    before = emulator.create_count
    turn(client, messages, "second")
    assert emulator.create_count == before + 1
    sent = emulator.chat_requests[-1]
    assert sent["isStartOfSession"] is True
    assert "an answer the user edited" in sent["previousMessages"][0]["description"]


def test_other_callers_never_continue_someone_elses_conversation(
    base_url: str, client: OpenAI, emulator: BingEmulator
) -> None:
    messages: Messages = []
    turn(client, messages, "private question", user="alice")
    alice_conversation = emulator.chat_requests[-1]["conversationId"]
    for extra in ({"user": "mallory"}, {}):
        copied = [dict(m) for m in messages]
        turn(client, copied, "continue it", **extra)
        assert emulator.chat_requests[-1]["isStartOfSession"] is True
        assert emulator.chat_requests[-1]["conversationId"] != alice_conversation
    turn(client, messages, "my follow-up", user="alice")
    assert emulator.chat_requests[-1]["conversationId"] == alice_conversation


def test_two_requests_with_one_history_do_not_share_a_conversation(
    client: OpenAI, aclient: AsyncOpenAI, emulator: BingEmulator
) -> None:
    messages: Messages = []
    turn(client, messages, "hello")
    count = len(emulator.chat_requests)

    async def both() -> None:
        async with aclient:
            history = [*messages, {"role": "user", "content": "again"}]
            await asyncio.gather(
                *(aclient.chat.completions.create(model="balanced", messages=history) for _ in range(2))
            )

    asyncio.run(both())
    sent = emulator.chat_requests[count:]
    assert sorted(r["isStartOfSession"] for r in sent) == [False, True]
    assert sent[0]["conversationId"] != sent[1]["conversationId"]


def test_expired_conversation_is_retried_fresh_transparently(client: OpenAI, emulator: BingEmulator) -> None:
    messages: Messages = []
    turn(client, messages, "before expiry")
    emulator.expire_conversations()
    before = emulator.create_count
    answer = turn(client, messages, "after expiry")
    assert "emulator" in answer
    assert emulator.create_count == before + 1
    retried = emulator.chat_requests[-1]
    assert retried["isStartOfSession"] is True
    assert "before expiry" in retried["previousMessages"][0]["description"]


def test_turn_limiter_on_a_continued_conversation_starts_fresh(
    client: OpenAI, emulator: BingEmulator
) -> None:
    messages: Messages = []
    turn(client, messages, "one")
    emulator.faults.chat, emulator.faults.times = "turn_limit", 1
    assert "emulator" in turn(client, messages, "two")
    assert emulator.chat_requests[-1]["isStartOfSession"] is True


def test_a_filtered_answer_is_not_continued(client: OpenAI, emulator: BingEmulator) -> None:
    messages: Messages = []
    turn(client, messages, "emulate:retract tell me")
    turn(client, messages, "and now?")
    assert emulator.chat_requests[-1]["isStartOfSession"] is True


@pytest.fixture(scope="module")
def anonymous_url(emulator: BingEmulator) -> Iterator[str]:
    settings = service_settings(emulator, bing_cookies="", turn_limit_margin=1)
    with ServerThread(settings) as url:
        yield url


def test_near_the_turn_limit_a_fresh_conversation_starts(anonymous_url: str, emulator: BingEmulator) -> None:
    messages: Messages = []
    before, sent_before = emulator.create_count, len(emulator.chat_requests)
    with openai_client(anonymous_url) as client:
        for index in range(6):
            turn(client, messages, f"q{index}")
    starts = [r["isStartOfSession"] for r in emulator.chat_requests[sent_before:]]
    assert starts == [True, False, False, False, True, False]  # anonymous limit 5, margin 1
    assert emulator.create_count == before + 2


def test_continuation_can_be_switched_off(emulator: BingEmulator) -> None:
    with (
        ServerThread(service_settings(emulator, continue_conversations=False)) as url,
        openai_client(url) as c,
    ):
        messages: Messages = []
        turn(c, messages, "a")
        turn(c, messages, "b")
    assert emulator.chat_requests[-1]["isStartOfSession"] is True


def test_warm_pool_serves_the_first_turn_without_a_create(emulator: BingEmulator) -> None:
    before = emulator.create_count
    with ServerThread(service_settings(emulator, warm_pool_size=2)) as url, openai_client(url) as client:
        eventually(lambda: emulator.create_count >= before + 2)
        pooled = list(emulator.conversations)[-2:]
        turn(client, [], "served from the pool")
        assert emulator.chat_requests[-1]["conversationId"] in pooled
        eventually(lambda: emulator.create_count == before + 3)  # refilled in the background


def test_warm_socket_is_opened_ahead_and_serves_the_first_turn(emulator: BingEmulator) -> None:
    with ServerThread(service_settings(emulator, warm_pool_size=1)) as url, openai_client(url) as client:
        eventually(lambda: any(r.handshake_done and not r.chats and r.closed_at is None
                               for r in emulator.connections))  # created and opened ahead
        warm = [r for r in emulator.connections
                if r.handshake_done and not r.chats and r.closed_at is None][-1]
        opened_before = len(emulator.connections)
        assert turn(client, [], "served on a warm socket")
        assert warm.chats == 1 and warm.completed  # the turn ran on the socket opened ahead
        assert all(r.chats == 0 for r in list(emulator.connections)[opened_before:])
        eventually(lambda: len([r for r in emulator.connections if not r.chats and r.closed_at is None]) == 1)
    eventually(lambda: all(r.closed_at is not None for r in emulator.connections))  # shutdown closes them


def test_a_warm_socket_bing_closed_is_replaced_invisibly(emulator: BingEmulator) -> None:
    emulator.socket_idle_timeout = 0.2
    mark = len(emulator.connections)
    try:
        with ServerThread(service_settings(emulator, warm_pool_size=1)) as url, openai_client(url) as client:
            eventually(lambda: any(r.handshake_done and r.closed_at is not None and not r.chats
                                   for r in emulator.connections))  # Bing dropped the idle warm socket
            dead = [r for r in emulator.connections if r.handshake_done and r.closed_at is not None][-1]
            pooled = list(emulator.conversations)[-1]
            emulator.socket_idle_timeout = 60.0
            assert turn(client, [], "after the warm socket died")
            assert emulator.chat_requests[-1]["conversationId"] == pooled  # the pooled conversation, anyway
            served = [r for r in list(emulator.connections)[mark:] if r.chats]
            assert len(served) == 1 and served[0].completed
            assert dead.closed_at is not None and served[0].opened_at > dead.closed_at  # a fresh socket
    finally:
        emulator.socket_idle_timeout = 60.0
