"""EmulatorThread: a BingEmulator on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .server import BingEmulator


class EmulatorThread:
    """Run a BingEmulator in a background thread so sync tests can use it."""

    def __init__(self, **kwargs: Any) -> None:
        """Remember BingEmulator keyword arguments; nothing runs until start()."""
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.emulator: BingEmulator | None = None

    def start(self, timeout: float = 10.0) -> BingEmulator:
        """Start the thread, block until the emulator listens, and return it."""
        self._thread = threading.Thread(target=self._run, name="bing-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("emulator did not start in time")
        if self._error is not None or self.emulator is None:
            raise RuntimeError("emulator failed to start") from self._error
        return self.emulator

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the emulator and join the thread."""
        if self._loop is None or self._thread is None:
            return
        if self.emulator is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop)
            future.result(timeout)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> BingEmulator:
        """Start on entry and return the emulator."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on exit."""
        self.stop()

    def _run(self) -> None:
        """Thread body: create a loop, start the emulator, run until stopped."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.emulator = BingEmulator(**self._kwargs)
            loop.run_until_complete(self.emulator.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
