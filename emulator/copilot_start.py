"""Copilot's HTTP side (PROTOCOL.md §7.1-7.2): POST /c/api/start, POST /c/api/conversations and
GET /c/api/user, with their failures; and who may open the chat websocket.

Credentials: an access token (`Authorization: Bearer` on HTTP, `accessToken=` on the socket) or the
anonymous cookie `__Host-copilot-anon`; neither gets 401. Account flags (`emulate=FLAG` in the
Cookie header, or a token that is `emulate=FLAG`) and the create fault switches apply as for Bing.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .faults import cookie_flags
from .frames import iso
from .httpserver import HttpReply, HttpRequest

if TYPE_CHECKING:
    from .server import BingEmulator

START_PATH = "/c/api/start"
CONVERSATIONS_PATH = "/c/api/conversations"
USER_PATH = "/c/api/user"
HTTP_PATHS = (START_PATH, CONVERSATIONS_PATH, USER_PATH)
ANON_COOKIE = "__Host-copilot-anon"
MAX_TURNS = 30
BAN_SECONDS = 600
HTML = "text/html; charset=utf-8"
CLOUDFLARE_PAGE = ('<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>'
                   '<div id="cf-turnstile"></div><script src="/cdn-cgi/challenge-platform/h/b/'
                   'orchestrate/chl_page/v1"></script></body></html>')


@dataclass
class CopilotConversation:
    """One conversation made by /c/api/start (or /c/api/conversations)."""

    conversation_id: str
    signed_in: bool
    flags: frozenset[str] = frozenset()
    created_at: float = field(default_factory=time.time)
    turns: int = 0


def bearer(authorization: str) -> str:
    """The token of an `Authorization: Bearer` header ("" when absent)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def account_flags(cookie: str, token: str) -> frozenset[str]:
    """The `emulate=` flags of the cookies, or of a token that is itself `emulate=FLAG`."""
    return cookie_flags(cookie) | (cookie_flags(token) if token.startswith("emulate=") else frozenset())


def authenticated(cookie: str, token: str) -> bool:
    """A token, or the anonymous cookie."""
    return bool(token) or f"{ANON_COOKIE}=" in cookie


def upgrade_status(emu: BingEmulator, path: str, cookie: str) -> int | None:
    """The HTTP status refusing a /c/api/chat upgrade, or None to accept it."""
    token = (parse_qs(urlsplit(path).query).get("accessToken") or [""])[0]
    if not authenticated(cookie, token) or "expired" in account_flags(cookie, token):
        return 401
    return emu.faults.take_upgrade()


async def handle_http(emu: BingEmulator, request: HttpRequest) -> HttpReply:
    """Answer POST /c/api/start, POST /c/api/conversations or GET /c/api/user."""
    wanted = "GET" if request.path == USER_PATH else "POST"
    if request.method != wanted:
        return HttpReply(405, "", HTML, [("Allow", wanted)])
    cookie, token = request.header("cookie", "; "), bearer(request.header("authorization"))
    flags = account_flags(cookie, token)
    if not authenticated(cookie, token) or "expired" in flags:
        return HttpReply(401, json.dumps({"error": "Invalid session"}))
    if request.path == USER_PATH:
        return HttpReply(200, json.dumps({"firstName": "Emulated" if token else None}))
    emu.copilot_start_count += 1
    if "throttled" in flags:
        emu.fault_counts["create:account:throttled"] += 1
        return HttpReply(429, json.dumps({"error": "Too many requests"}), headers=[("Retry-After", "60")])
    fault = emu.faults.take_create() or emu.faults.roll_create(emu.random)
    if "blocked" in flags:
        fault = "blocked"
    if fault is not None:
        emu.fault_counts[f"create:{fault}"] += 1
        if fault == "slow":
            await emu.sleep(emu.faults.slow_seconds)
        elif fault != "no_start" or request.path == START_PATH:
            return start_fault(fault)
    return start_success(emu, request.path, bool(token), flags)


def start_fault(fault: str) -> HttpReply:
    """The reply for a start fault."""
    if fault == "blocked":
        ban = iso(time.time() + BAN_SECONDS)
        return HttpReply(200, json.dumps({"isBlocked": True, "banExpiresAt": ban, "remainingTurns": 0}))
    if fault == "no_start":
        return HttpReply(404, "", HTML)
    if fault in ("cloudflare", "html"):
        return HttpReply(403 if fault == "cloudflare" else 200, CLOUDFLARE_PAGE if fault == "cloudflare"
                         else "<html><body>Copilot</body></html>", HTML)
    if fault in ("empty", "missing_ids", "missing_signature"):
        return HttpReply(200, "" if fault == "empty" else json.dumps({"remainingTurns": MAX_TURNS}))
    if fault.startswith("http"):
        return HttpReply(int(fault.removeprefix("http")), "", HTML)
    return HttpReply(500, "", HTML)  # Bing's create-only faults: an internal error here


def start_success(emu: BingEmulator, path: str, signed_in: bool, flags: frozenset[str]) -> HttpReply:
    """Register a conversation; answer with its id and a session cookie."""
    conv = CopilotConversation(secrets.token_urlsafe(16), signed_in, flags)
    emu.copilot_conversations[conv.conversation_id] = conv
    if emu.keep_records is not None:
        while len(emu.copilot_conversations) > emu.keep_records:
            del emu.copilot_conversations[next(iter(emu.copilot_conversations))]
    cookie = f"__Host-copilot-session={secrets.token_hex(8)}; Path=/; Secure; HttpOnly; SameSite=None"
    if path == CONVERSATIONS_PATH:
        body: dict[str, Any] = {"id": conv.conversation_id}
    else:
        body = {"currentConversationId": conv.conversation_id, "remainingTurns": MAX_TURNS,
                "isBlocked": False, "banExpiresAt": None}
    return HttpReply(200, json.dumps(body), headers=[("Set-Cookie", cookie)])
