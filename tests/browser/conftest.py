"""Headless Chromium (Debian's package) driven by Playwright, and where screenshots are saved.

Chromium must be installed (`.ci/run` installs it): without it these tests fail, unless the
environment says SKIP_BROWSER_TESTS=1 on purpose (CI never does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts" / "browser"
SAVED: list[Path] = []


def browser_missing(reason: str) -> None:
    """Skip only when told to; otherwise a missing browser is a failure."""
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip(f"{reason} (SKIP_BROWSER_TESTS=1)")
    pytest.fail(
        f"{reason}: install it (apt-get install chromium; pip install -r requirements-dev.txt), "
        "or set SKIP_BROWSER_TESTS=1 to skip the browser tests on purpose"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: while Playwright's sync API is open, its event loop counts as
    running in the main thread, and a later test's `asyncio.run()` would refuse to start."""
    if not Path(CHROMIUM).exists():
        browser_missing(f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("Playwright's Python client is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def save_screenshot(page: Any, name: str) -> Path:
    """A full-page PNG under artifacts/browser/, listed at the end of the test run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SAVED.append(path)
    print(f"screenshot: {path}")
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots went."""
    for path in SAVED:
        terminalreporter.write_line(f"browser screenshot saved: {path}")
