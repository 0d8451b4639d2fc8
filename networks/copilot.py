"""Copilot's HTTP side (PROTOCOL.md §7.1-7.2): start a conversation; the websocket URL and headers.

Every failure becomes an `UpstreamError`. The token and cookies go in explicit headers, never into
the shared client's jar; cookies that start sets are kept on the session for the websocket.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from networks.headers import USER_AGENT
from utils.errors import (
    COPILOT_CLOUDFLARE_HELP,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamCaptcha,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from utils.ids import uuid_text
from utils.settings import Settings

log = logging.getLogger(__name__)
START_PATH = "/c/api/start"
CONVERSATIONS_PATH = "/c/api/conversations"
START_BODY = {
    "timeZone": "UTC",
    "startNewConversation": True,
    "teenSupportEnabled": True,
    "correctPersonalizationSetting": True,
    "performUserMerge": True,
    "deferredDataUseCapable": True,
}
_CLOUDFLARE_MARKS = (b"cf-turnstile", b"challenge-platform", b"Just a moment")


@dataclass(frozen=True, slots=True)
class CopilotSession:
    """A Copilot conversation: its id, the cookies start set, and the turns left when it said."""

    conversation_id: str
    cookies: str = ""
    remaining_turns: int | None = None


def copilot_headers(cookies: str, token: str, base_url: str) -> dict[str, str]:
    """Browser-like headers; `Authorization` for a token, `Cookie` for browser cookies."""
    origin = base_url.rstrip("/")
    headers = {
        "User-Agent": USER_AGENT,
        "Origin": origin,
        "Referer": f"{origin}/",
        "Accept": "application/json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookies:
        headers["Cookie"] = cookies
    return headers


def copilot_ws_url(base: str, token: str) -> str:
    """The socket URL with a fresh `clientSessionId`, and the token as `accessToken` when signed in."""
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}clientSessionId={uuid_text()}"
    return f"{url}&accessToken={quote(token, safe='')}" if token else url


async def start_copilot_conversation(
    http: httpx.AsyncClient, settings: Settings, cookies: str, token: str
) -> CopilotSession:
    """POST /c/api/start (or, where that does not exist, /c/api/conversations); raises UpstreamError."""
    headers = copilot_headers(cookies, token, settings.copilot_url)
    base = settings.copilot_url.rstrip("/")
    response = await post(http, f"{base}{START_PATH}", headers, START_BODY, settings)
    if response.status_code in (404, 405):  # the 2024-mid 2025 endpoint
        log.info("Copilot has no %s; falling back to %s", START_PATH, CONVERSATIONS_PATH)
        response = await post(http, f"{base}{CONVERSATIONS_PATH}", headers, None, settings)
    return read_start_response(response)


async def post(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any, settings: Settings
) -> httpx.Response:
    """One POST with the failures of the network itself translated."""
    try:
        return await http.post(url, headers=headers, json=body)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"Starting a Copilot conversation took longer than {settings.create_timeout:g} s."
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(f"Could not reach Copilot ({type(exc).__name__}).") from exc


def read_start_response(response: httpx.Response) -> CopilotSession:
    """Validate a start (or conversations) answer into a `CopilotSession`."""
    error = start_status_error(response)
    if error is not None:
        raise error
    body = start_body(response)
    if body.get("isBlocked") is True:
        raise blocked_error(body.get("banExpiresAt"))
    conversation_id = body.get("currentConversationId") or body.get("id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise UpstreamBadResponse("Copilot's start answer lacks a conversation id.")
    remaining = body.get("remainingTurns")
    return CopilotSession(
        conversation_id,
        set_cookies(response),
        remaining if isinstance(remaining, int) and not isinstance(remaining, bool) else None,
    )


def start_status_error(response: httpx.Response) -> UpstreamError | None:
    """The error for a start answer that is not a 200 JSON object, if it is one."""
    status = response.status_code
    if is_cloudflare(response):
        return UpstreamCaptcha(COPILOT_CLOUDFLARE_HELP, headers={"x-should-retry": "false"})
    if status == 200:
        return None
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"Copilot rejected the service's token or cookies (HTTP {status} on start): renew them."
        )
    if status == 429:
        return UpstreamRateLimited(
            "Copilot rate-limited conversation start (HTTP 429).",
            headers={"Retry-After": response.headers.get("retry-after", "60")},
        )
    return UpstreamBadResponse(f"Copilot answered start with HTTP {status}.")


def is_cloudflare(response: httpx.Response) -> bool:
    """A Cloudflare challenge page instead of an API answer."""
    if "html" not in response.headers.get("content-type", ""):
        return False
    head = response.content[:4096]
    return any(mark in head for mark in _CLOUDFLARE_MARKS)


def start_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 200 answer; anything else is a clear error."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamBadResponse("Copilot's start answer was not a JSON object.")
    return body


def blocked_error(ban_expires_at: Any) -> UpstreamRateLimited:
    """`isBlocked`: a 429 whose Retry-After is the time left until `banExpiresAt` (PROTOCOL.md §8)."""
    wait = seconds_until(ban_expires_at)
    return UpstreamRateLimited(
        f"Copilot has blocked this account for now; it may be used again in {wait} s.",
        headers={"Retry-After": str(wait), "x-should-retry": "false"},
    )


def seconds_until(moment: Any, default: int = 3600) -> int:
    """Whole seconds from now until `moment` (epoch seconds or milliseconds, or ISO 8601), at least 1."""
    try:
        if isinstance(moment, (int, float)) and not isinstance(moment, bool):
            stamp = float(moment) / (1000.0 if moment > 1e11 else 1.0)
        elif isinstance(moment, str) and moment:
            stamp = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
        else:
            return default
    except (ValueError, OverflowError):
        return default
    return max(int(stamp - time.time()), 1)


def set_cookies(response: httpx.Response) -> str:
    """`name=value` pairs from the answer's Set-Cookie headers, as a Cookie header fragment."""
    pairs = []
    for header in response.headers.get_list("set-cookie"):
        pair = header.split(";", 1)[0].strip()
        if "=" in pair:
            pairs.append(pair)
    return "; ".join(pairs)


def merge_cookies(account: str, session: str) -> str:
    """The account's cookies overridden by those the conversation's start set."""
    jar: dict[str, str] = {}
    for header in (account, session):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                jar[name] = value
    return "; ".join(f"{name}={value}" for name, value in jar.items())
