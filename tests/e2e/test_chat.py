"""The official openai client against the real server, streaming and not, over the emulator."""

from __future__ import annotations

import asyncio

import httpx
from openai import AsyncOpenAI, OpenAI

from emulator import BingEmulator
from tests.e2e.helpers import last_answer, user


def test_non_stream_answer(client: OpenAI, emulator: BingEmulator) -> None:
    completion = client.chat.completions.create(model="precise", messages=user("What is 2+2?"))
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "precise"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == last_answer(emulator)
    assert "emulator" in choice.message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extras = (completion.model_extra or {})["bing"]
    assert extras["sources"] and extras["sources"][0]["url"].startswith("https://")
    assert extras["suggestions"]
    assert "Searching" not in choice.message.content


def test_stream_answer_in_order(client: OpenAI, emulator: BingEmulator) -> None:
    stream = client.chat.completions.create(model="creative", messages=user("Tell me a story"), stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert all(contents) and len(contents) > 3
    assert "".join(contents) == last_answer(emulator)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert chunks[0].model == "creative"


def test_each_request_gets_a_fresh_id(client: OpenAI) -> None:
    first = client.chat.completions.create(model="balanced", messages=user("a"))
    second = client.chat.completions.create(model="balanced", messages=user("a"))
    assert first.id != second.id


def test_include_usage_adds_a_final_usage_chunk(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="balanced", messages=user("hi"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_system_history_and_tone_reach_bing(client: OpenAI, emulator: BingEmulator) -> None:
    client.chat.completions.create(
        model="precise-offline",
        messages=[
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Ahoy!"},
            {"role": "user", "content": "Where is the treasure?"},
        ],
    )
    sent = emulator.chat_requests[-1]
    assert sent["tone"] == "Precise"
    assert "nosearchall" in sent["optionsSets"] and sent["plugins"] == []
    assert sent["message"]["text"] == "Where is the treasure?"
    assert sent["isStartOfSession"] is True
    context = sent["previousMessages"][0]
    assert context["contextType"] == "WebPage"
    assert context["description"].startswith("[system](#additional_instructions)\nYou are a pirate.")
    assert "[assistant](#message)\nAhoy!" in context["description"]


def test_single_turn_system_prompt_is_not_dropped(client: OpenAI, emulator: BingEmulator) -> None:
    client.chat.completions.create(
        model="balanced", messages=[{"role": "developer", "content": "Answer in French."}, *user("Hi")]
    )
    assert "Answer in French." in emulator.chat_requests[-1]["previousMessages"][0]["description"]


def test_alias_is_echoed_and_mapped(client: OpenAI, emulator: BingEmulator) -> None:
    completion = client.chat.completions.create(model="gpt-4", messages=user("hi"))
    assert completion.model == "gpt-4"
    assert emulator.chat_requests[-1]["tone"] == "Creative"


def test_lenient_request_fields_are_accepted(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="balanced",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "bob"}],
        temperature=0.3,
        top_p=1,
        presence_penalty=0,
        max_tokens=100,
        user="u-1",
        seed=1,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        tool_choice="auto",
        extra_body={"some_vendor_field": {"x": 1}},
    )
    assert completion.choices[0].message.content


def test_inline_extras_on_request(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="creative", messages=user("sources please"), extra_body={"inline_extras": ["sources"]}
    )
    assert "**Sources**" in (completion.choices[0].message.content or "")


def test_retracted_answer_finishes_as_content_filter(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="creative", messages=user("emulate:retract x"), stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_expired_conversation_is_replaced_once(client: OpenAI, emulator: BingEmulator) -> None:
    emulator.faults.chat, emulator.faults.times = "invalid_session", 1
    before = emulator.create_count
    completion = client.chat.completions.create(model="balanced", messages=user("hi"))
    assert completion.choices[0].finish_reason == "stop"
    assert emulator.create_count == before + 2


def test_sse_wire_format(base_url: str) -> None:
    body = {"model": "balanced", "stream": True, "messages": user("wire")}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert not any(line.startswith("event:") for line in lines)
    assert all(line.startswith(("data: ", ":")) for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_keep_alive_comments_while_bing_thinks(emulator: BingEmulator) -> None:
    from tests.servers import ServerThread, service_settings

    settings = service_settings(emulator, stream_hold_timeout=0.3, sse_ping_seconds=0.2)
    with ServerThread(settings) as url:
        body = {"model": "balanced", "stream": True, "messages": user("emulate:think=1.2 slow")}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
            lines = [line for line in response.iter_lines() if line]
    first_content = next(i for i, line in enumerate(lines) if '"content":"T' in line)
    assert any(line.startswith(":") for line in lines[:first_content])
    assert lines[-1] == "data: [DONE]"


def test_64_concurrent_streams(aclient: AsyncOpenAI) -> None:
    async def one(index: int) -> str:
        stream = await aclient.chat.completions.create(
            model="balanced-offline", messages=user(f"request number {index}"), stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    async def run() -> list[str]:
        async with aclient:
            return await asyncio.gather(*(one(i) for i in range(64)))

    answers = asyncio.run(run())
    for index, answer in enumerate(answers):
        assert f"request number {index}." in answer
