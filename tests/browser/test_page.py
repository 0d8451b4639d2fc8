"""The status page and playground at `/`, in headless Chromium, against the emulator-backed service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import BingEmulator
from tests.browser.conftest import save_screenshot
from tests.conftest import openai_client
from tests.e2e.helpers import last_answer, user
from tests.servers import ServerThread, service_settings

SLOW_ANSWER = "emulate:words=60 emulate:delay=0.04 tell me about streams"


@pytest.fixture(scope="module")
def two_accounts(emulator: BingEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """`alpha` is fine; Bing asks `bravo` for a captcha (the emulator's cookie flag)."""
    path = Path(tmp_path_factory.mktemp("accounts")) / "accounts.json"
    path.write_text(
        json.dumps(
            [
                {"name": "alpha", "cookies": "_U=alpha-cookie"},
                {"name": "bravo", "cookies": "_U=bravo-cookie; emulate=captcha"},
            ]
        )
    )
    settings = service_settings(
        emulator, bing_cookies="", bing_cookies_file=str(path), failover_attempts=3, throttle_retry_after=60
    )
    server = ServerThread(settings)
    with server:
        yield server


@pytest.fixture
def site(two_accounts: ServerThread) -> str:
    """The service's base URL, every account healthy again."""
    two_accounts.heal_accounts()
    port = two_accounts.server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


def account_state(page: Any, name: str) -> str:
    return str(page.locator(f'#accounts tr[data-account="{name}"] td.state').text_content())


def test_page_shows_the_service_and_each_accounts_state(page: Any, site: str) -> None:
    with openai_client(site) as client:  # the second turn lands on bravo, which needs a captcha
        client.chat.completions.create(model="balanced", messages=user("one"))
        client.chat.completions.create(model="balanced", messages=user("two"))
    page.goto(site + "/")
    page.wait_for_selector('#accounts tr[data-account="bravo"]')
    assert page.locator("#version").text_content() == "version 0.1.0"
    assert "127.0.0.1" in str(page.locator("#upstream").text_content())
    assert account_state(page, "alpha") == "healthy"
    assert account_state(page, "bravo") == "needs_captcha"
    assert page.locator('#accounts tr[data-account="bravo"] td').nth(1).text_content() == "bing"
    assert "Copilot" in str(page.locator("#upstream").text_content())
    assert page.locator("#shared-state").text_content() == "in this process (no REDIS_URL)"
    assert "no account can serve" not in str(page.locator("#service-status").text_content())
    retry = page.locator('#accounts tr[data-account="bravo"] td').nth(4).text_content()
    assert retry in ("15 min", "14 min")  # re-probed after 15 minutes
    assert page.locator("#recent-total").text_content() == "2"
    assert "upstream_captcha_required" not in str(page.locator("#recent-errors").text_content())
    html = page.content()
    assert "alpha-cookie" not in html and "bravo-cookie" not in html


def test_playground_streams_an_answer(page: Any, site: str, emulator: BingEmulator) -> None:
    page.goto(site + "/")
    page.wait_for_selector('#model option[value="creative"]', state="attached")
    page.select_option("#model", "creative")
    page.fill("#prompt", SLOW_ANSWER)
    page.click("#send")
    bubble = page.locator(".msg.assistant").last
    page.wait_for_function(  # part of the answer is on screen while the stream is still open
        "() => { const b = document.querySelector('.msg.assistant.streaming');"
        " return b && b.textContent.length > 0; }"
    )
    partial = str(bubble.text_content())
    page.wait_for_selector(".msg.assistant[data-finish]")
    assert bubble.get_attribute("data-finish") == "stop"
    full = last_answer(emulator)
    assert bubble.text_content() == full + "finish: stop"
    assert 0 < len(partial) < len(full)
    assert page.locator("#error").is_hidden()
    assert page.locator("#request-id").text_content().startswith("request id ")
    page.wait_for_function("() => document.querySelector('#recent-models').textContent.includes('creative')")


def test_playground_shows_a_throttling_error(page: Any, site: str) -> None:
    page.goto(site + "/")
    page.wait_for_selector('#accounts tr[data-account="alpha"]')
    page.fill("#prompt", "emulate:throttled hello")
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").get_attribute("data-code") == "rate_limit_exceeded"
    assert page.locator("#error-status").text_content() == "HTTP 429"
    assert "cooling down" in str(page.locator("#error-message").text_content())
    page.wait_for_function(
        "() => document.querySelector('#accounts tr[data-account=\"alpha\"] td.state')"
        ".textContent === 'cooling_down'"
    )
    assert "rate_limit_exceeded" in str(page.locator("#recent-errors").text_content())
    save_screenshot(page, "status-and-playground")


def test_playground_shows_an_error_inside_a_started_stream(page: Any, site: str) -> None:
    page.goto(site + "/")
    page.wait_for_selector('#model option[value="balanced"]', state="attached")
    page.fill("#prompt", "emulate:drop emulate:words=40 cut me off")
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").get_attribute("data-status") == "in-band"
    assert page.locator("#error-code").text_content() == "upstream_stream_interrupted"
    assert page.locator(".msg.assistant").last.get_attribute("data-finish") == "error"


def test_with_api_keys_the_page_asks_for_a_key(page: Any, emulator: BingEmulator) -> None:
    with ServerThread(service_settings(emulator, api_keys="sk-page-key")) as url:
        page.goto(url + "/")
        page.wait_for_selector("#status-error:not([hidden])")
        assert "needs an API key" in str(page.locator("#status-error").text_content())
        assert page.locator("#accounts tbody tr").count() == 0
        page.fill("#api-key", "sk-page-key")
        page.press("#api-key", "Tab")
        page.wait_for_selector('#accounts tr[data-account="default"]')
        assert page.locator("#status-error").is_hidden()
        page.wait_for_selector('#model option[value="balanced"]', state="attached")
        page.fill("#prompt", "hello with a key")
        page.click("#send")
        page.wait_for_selector(".msg.assistant[data-finish]")
        assert page.locator(".msg.assistant").last.get_attribute("data-finish") == "stop"
        save_screenshot(page, "with-api-key")
