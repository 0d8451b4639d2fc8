"""SIGTERM with requests in flight: `python -m apis.chat_api` as a real process against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator import BingEmulator
from tests.e2e.helpers import eventually, user
from tests.e2e.test_cli import ROOT, free_port

GRACE = 1.0
SLOW = "emulate:words=3000 emulate:delay=0.01 tell me a long story"  # about 30 s of answer


@pytest.fixture
def service_process(emulator: BingEmulator) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BING_", "API_KEYS", "DEMO"))}
    env.update(
        BING_COOKIES="_U=test-account-cookie; KievRPSSecAuth=TESTSECRET",
        BING_CREATE_URL=emulator.create_url,
        BING_CHATHUB_URL=emulator.chathub_url,
        SHUTDOWN_GRACE_SECONDS=str(GRACE),
        WARM_POOL_SIZE="0",
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "apis.chat_api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{base}/health", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_sigterm_ends_streams_in_band_after_the_grace(
    service_process: tuple[subprocess.Popen[bytes], str], emulator: BingEmulator
) -> None:
    process, base = service_process
    body = {"model": "balanced", "stream": True, "messages": user(SLOW)}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        record = emulator.connections[-1]
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()

        time.sleep(0.4)  # uvicorn closes its listener on its next 0.1 s tick
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health", timeout=2)

        data = [line[6:] for line in lines if line.startswith("data: ")]
        ended = time.monotonic() - sent

    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "server_shutting_down"
    assert error["type"] == "server_error"
    assert "SHUTDOWN_GRACE_SECONDS" in error["message"]
    # The answer kept flowing during the grace, and nothing else is an error or a finish.
    assert len(data) > 10
    assert sum('"error"' in item for item in data) == 1
    assert not any('"finish_reason":"stop"' in item for item in data)
    assert GRACE - 0.2 < ended < GRACE + 2.0
    eventually(lambda: record.closed_at is not None, timeout=3)
    assert not record.completed
    process.wait(10)


@pytest.mark.parametrize(
    ("stream", "prompt"),
    [(False, SLOW), (True, "emulate:think=10 take your time")],  # a stream still held before its 200
    ids=["non-stream", "held-stream"],
)
def test_sigterm_gives_a_waiting_request_the_grace_then_503(
    service_process: tuple[subprocess.Popen[bytes], str], emulator: BingEmulator, stream: bool, prompt: str
) -> None:
    process, base = service_process
    body = {"model": "balanced", "stream": stream, "messages": user(prompt)}
    result: dict[str, Any] = {}

    def post() -> None:
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=15)
        result.update(status=response.status_code, body=response.json(), at=time.monotonic())

    count = len(emulator.connections)
    worker = threading.Thread(target=post)
    worker.start()
    eventually(lambda: len(emulator.connections) > count and emulator.connections[count].chats, timeout=5)
    record = emulator.connections[count]
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    worker.join(10)

    assert result["status"] == 503
    assert set(result["body"]["error"]) == {"message", "type", "param", "code"}
    assert result["body"]["error"]["code"] == "server_shutting_down"
    assert GRACE - 0.2 < result["at"] - sent < GRACE + 2.0
    eventually(lambda: record.closed_at is not None, timeout=3)
    process.wait(10)


def test_sigterm_lets_a_short_stream_finish_normally(
    service_process: tuple[subprocess.Popen[bytes], str], emulator: BingEmulator
) -> None:
    process, base = service_process
    body = {"model": "balanced", "stream": True, "messages": user("emulate:words=60 emulate:delay=0.01 hi")}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        process.send_signal(signal.SIGTERM)
        data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert '"finish_reason":"stop"' in data[-2]
    assert not any('"error"' in item for item in data)
    process.wait(10)
