"""`python -m apis.chat_api --demo` as a newcomer runs it: a real process, a real port."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import openai_client
from tests.e2e.helpers import user

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_demo_mode_serves_the_emulator_end_to_end() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BING_", "API_KEYS"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "apis.chat_api", "--demo", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{base}/health").json()["upstream"]["demo"]:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with openai_client(base) as client:
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="creative", messages=user("hi"), stream=True)
            )
            whole = client.chat.completions.create(model="precise", messages=user("hi"))
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="precise", messages=user("emulate:throttled hi"))
            time.sleep(3.2)  # the demo's only account rests 3 s, not an hour
            after = client.chat.completions.create(model="precise", messages=user("hi again"))
            drawn = client.images.generate(prompt="a lighthouse", response_format="b64_json")
        assert drawn.data and base64.b64decode(drawn.data[0].b64_json or "").startswith(b"\x89PNG")
        assert "emulator, not from Bing" in streamed
        assert "emulator, not from Bing" in (whole.choices[0].message.content or "")
        assert after.choices[0].finish_reason == "stop"
    finally:
        process.terminate()
        process.wait(10)


def test_help_names_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apis.chat_api", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--host", "--server", "--port", "--reload", "--demo"):
        assert flag in result.stdout
