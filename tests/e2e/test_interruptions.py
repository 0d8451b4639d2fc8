"""Failures after the first byte: in-band error then [DONE], never a quiet cut; disconnects close upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from emulator import BingEmulator
from tests.e2e.helpers import eventually, last_answer, user


@pytest.mark.parametrize("fault", ["drop", "close7", "stall", "no_final"])
def test_stream_cut_raises_in_the_client_after_partial_text(
    client: OpenAI, emulator: BingEmulator, fault: str
) -> None:
    stream = client.chat.completions.create(
        model="balanced", messages=user(f"emulate:{fault} go"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            assert chunk.choices[0].finish_reason is None  # never a quiet "stop"
    assert "".join(received)  # the answer had started
    assert caught.value.code == "upstream_stream_interrupted"
    assert "cut off" in caught.value.message


@pytest.mark.parametrize(
    ("fault", "status"), [("drop", 502), ("close7", 502), ("stall", 504), ("no_final", 502)]
)
def test_non_stream_cut_is_an_error_status(client: OpenAI, fault: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="balanced", messages=user(f"emulate:{fault} go"))
    assert caught.value.status_code == status
    assert caught.value.code == "upstream_stream_interrupted"


def test_in_band_error_is_one_data_event_then_done(base_url: str) -> None:
    body = {"model": "balanced", "stream": True, "messages": user("emulate:close7 go")}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "server_error"
    assert not any('"finish_reason":"stop"' in line for line in data)


def test_unknown_upstream_records_are_ignored_and_restarts_are_clean(
    client: OpenAI, emulator: BingEmulator
) -> None:
    for fault in ("restart", "shrink", "empty_message"):
        completion = client.chat.completions.create(model="balanced", messages=user(f"emulate:{fault} go"))
        content = completion.choices[0].message.content or ""
        assert completion.choices[0].finish_reason == "stop"
        assert content.endswith(last_answer(emulator)[-20:])
        assert content.count("This answer comes from") == 1


def test_client_disconnect_closes_the_upstream_socket(base_url: str, emulator: BingEmulator) -> None:
    body = {
        "model": "balanced",
        "stream": True,
        "messages": user("emulate:words=3000 emulate:delay=0.01 long"),
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        record = emulator.connections[-1]
    # Leaving the block closed the client's connection mid-answer.
    eventually(lambda: record.closed_at is not None, timeout=2)
    assert record.closed_early_by_client and not record.completed


def test_non_stream_client_disconnect_closes_the_upstream_socket(
    base_url: str, emulator: BingEmulator
) -> None:
    body = {"model": "balanced", "messages": user("emulate:words=3000 emulate:delay=0.01 long")}
    count = len(emulator.connections)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=0.5)
    record = emulator.connections[count]
    eventually(lambda: record.closed_at is not None, timeout=2)
    assert not record.completed


@pytest.mark.parametrize("stream", [True, False])
def test_client_leaving_before_the_first_token_closes_the_upstream_socket(
    base_url: str, emulator: BingEmulator, stream: bool
) -> None:
    body = {"model": "balanced", "stream": stream, "messages": user("emulate:think=3 slow to start")}
    count = len(emulator.connections)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while Bing still thinks
        httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=0.5)
    record = emulator.connections[count]
    eventually(lambda: record.closed_at is not None, timeout=1.5)  # long before Bing's first text
    assert not record.completed
