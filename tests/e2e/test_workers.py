"""`python -m apis.chat_api --workers N`: refused without REDIS_URL, and sharing state when given it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BING_", "API_KEYS", "REDIS_", "DEMO"))}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apis.chat_api", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip


def test_several_workers_without_redis_are_refused_clearly() -> None:
    done = run_cli("--workers", "2", "--port", str(free_port()), env=service_env())
    assert done.returncode != 0
    assert "--workers 2 needs shared state: set REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_and_the_demo_do_not_mix() -> None:
    env = service_env(REDIS_URL="redis://127.0.0.1:1/0")
    done = run_cli("--workers", "2", "--demo", "--port", str(free_port()), env=env)
    assert done.returncode != 0 and "demo" in done.stderr


@pytest.fixture
def workers(emulator: BingEmulator, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with RedisServer(tmp_path) as redis_url:
        env = service_env(
            REDIS_URL=redis_url,
            BING_COOKIES="_U=worker-secret",
            BING_COOKIES_FILE="/data/not-mounted.json",  # as in the image: each worker falls back too
            BING_CREATE_URL=emulator.create_url,
            BING_CHATHUB_URL=emulator.chathub_url,
            WARM_POOL_SIZE="0",
            LOG_LEVEL="INFO",
        )
        argv = [sys.executable, "-m", "apis.chat_api", "--workers", "2", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield wait_until_serving(f"http://127.0.0.1:{port}", process)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        assert b"Traceback" not in stderr
        assert stderr.count(b"redis reachable: shared state in use") == 2  # each worker logs


def wait_until_serving(base: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while True:
        try:
            health = httpx.get(f"{base}/health").json()
            if health["shared_state"]["status"] == "ok":
                return base
        except httpx.TransportError:
            pass
        assert process.poll() is None, "the service exited"
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)


def test_workers_share_conversations_through_redis(workers: str, emulator: BingEmulator) -> None:
    before, sent_before = emulator.create_count, len(emulator.chat_requests)
    messages: list[dict[str, str]] = []
    with openai_client(workers) as client:
        for index in range(5):
            messages.append({"role": "user", "content": f"turn {index}"})
            with httpx.Client() as fresh:  # a new connection per turn, so either worker may take it
                client = client.with_options(http_client=fresh)
                answer = client.chat.completions.create(model="balanced", messages=messages)
            messages.append({"role": "assistant", "content": answer.choices[0].message.content or ""})
    assert emulator.create_count == before + 1
    assert [r["isStartOfSession"] for r in emulator.chat_requests[sent_before:]] == [True] + [False] * 4
