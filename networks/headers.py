"""Browser-like request headers for the two Bing legs (values as working clients send them)."""

from __future__ import annotations

import functools

from utils.ids import uuid_text

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
ORIGIN = "https://www.bing.com"


def create_headers(cookies: str, locale: str) -> dict[str, str]:
    """Headers for GET /turing/conversation/create; the Cookie header only when there are cookies."""
    headers = dict(stable_create_headers(cookies, locale))
    headers.update(fresh_create_headers())
    return headers


@functools.lru_cache(maxsize=64)
def stable_create_headers(cookies: str, locale: str) -> tuple[tuple[str, str], ...]:
    """The create headers that stay the same for an account (a hashable value the shared client
    keeps its merged headers under: see `UpstreamHttp.get_direct`)."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Accept-Language": f"{locale},{locale.split('-')[0]};q=0.9",
        "Referer": f"{ORIGIN}/search?q=Bing+AI&showconv=1",
        "sec-ch-ua": '"Microsoft Edge";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
        "sec-ch-ua-mobile": "?0",
        "sec-ch-ua-platform": '"Windows"',
        "x-ms-useragent": "azsdk-js-api-client-factory/1.0.0-beta.1 core-rest-pipeline/1.12.3 OS/Windows",
    }
    if cookies:
        headers["Cookie"] = cookies
    return tuple(headers.items())


def fresh_create_headers() -> dict[str, str]:
    """The create header that is new on every request."""
    return {"x-ms-client-request-id": uuid_text()}


def chathub_headers(cookies: str, locale: str) -> dict[str, str]:
    """Extra headers for the ChatHub websocket upgrade (same cookies as create)."""
    headers = {
        "Accept-Language": f"{locale},{locale.split('-')[0]};q=0.9",
        "Cache-Control": "no-cache",
        "Pragma": "no-cache",
    }
    if cookies:
        headers["Cookie"] = cookies
    return headers
