"""Shared fixtures: one emulator and one service per test session, faults reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from emulator import BingEmulator, EmulatorThread
from tests.servers import ServerThread, service_settings


@pytest.fixture(scope="session")
def emulator() -> Iterator[BingEmulator]:
    with EmulatorThread(update_delay=0.001, ping_interval=0.2) as emu:
        yield emu


@pytest.fixture(autouse=True)
def clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    if "emulator" in request.fixturenames:
        emu: BingEmulator = request.getfixturevalue("emulator")
        emu.faults.clear()
        yield
        emu.faults.clear()
    else:
        yield
    if "base_url" in request.fixturenames:
        request.getfixturevalue("service").heal_accounts()


@pytest.fixture(scope="session")
def service(emulator: BingEmulator) -> Iterator[ServerThread]:
    server = ServerThread(service_settings(emulator))
    with server:
        yield server


@pytest.fixture(scope="session")
def base_url(service: ServerThread) -> str:
    port = service.server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def client(base_url: str) -> Iterator[OpenAI]:
    with openai_client(base_url) as openai:
        yield openai


@pytest.fixture
def aclient(base_url: str) -> AsyncOpenAI:
    """Close it inside the event loop that used it: `await aclient.close()`."""
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0, timeout=30)


def openai_client(base_url: str, **kwargs: Any) -> OpenAI:
    """The official client as users build it, without retries so each error is seen once."""
    options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0, "timeout": 30}
    options.update(kwargs)
    return OpenAI(base_url=f"{base_url}/v1", **options)
