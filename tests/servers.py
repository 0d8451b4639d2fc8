"""The real service under uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from apis.app import create_app
from conversations.accounts import record_outcome
from utils.settings import Settings


class ServerThread:
    """`with ServerThread(settings) as base_url:` serves the app until the block ends."""

    def __init__(self, settings: Settings, *, own_process: bool = False) -> None:
        self.app = create_app(settings, own_process=own_process)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="service", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def heal_accounts(self) -> None:
        """Forget every account's health (tests share one service; one test's throttle is not the next's)."""
        upstream = getattr(self.app.state, "upstream", None)
        if upstream is not None:
            for account in upstream.accounts.accounts.values():
                record_outcome(account, None, time.time())

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def service_settings(emulator: Any, **overrides: Any) -> Settings:
    """Settings pointing at the emulator, with deadlines short enough for tests."""
    values: dict[str, Any] = {
        "bing_cookies": "_U=test-account-cookie; KievRPSSecAuth=TESTSECRET",
        "bing_create_url": emulator.create_url,
        "bing_chathub_url": emulator.chathub_url,
        "bing_web_url": emulator.web_url,
        "image_poll_interval": 0.05,
        "image_create_timeout": 1.0,
        "image_fetch_timeout": 2.0,
        "create_timeout": 2.0,
        "connect_timeout": 2.0,
        "upstream_idle_timeout": 1.5,
        "stream_hold_timeout": 5.0,
        "model_aliases": "gpt-4=creative,gpt-3.5-turbo=balanced",
        "warm_pool_size": 0,  # tests that count creates stay exact; the pool has its own tests
        "failover_attempts": 1,  # error-mapping tests see each failure once; failover has its own tests
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)
