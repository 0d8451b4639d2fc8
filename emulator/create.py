"""GET /turing/conversation/create: the reply (with faults), independent of the HTTP server."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from .faults import ACCOUNT_FLAGS, COPILOT_START_FAULTS, account_fault, cookie_flags
from .httpserver import HttpReply
from .state import new_conversation

if TYPE_CHECKING:
    from .server import BingEmulator

log = logging.getLogger(__name__)

CREATE_PATHS = ("/turing/conversation/create", "/edgesvc/turing/conversation/create")

_RESULT_FAULTS: dict[str, tuple[str, str]] = {
    "unauthorized": ("UnauthorizedRequest",
                     "Sorry, you need to login first to access this service."),
    "forbidden": ("Forbidden", "Sorry, you are not allowed to access this service."),
    "internal": ("InternalServerError", "Error processing request."),
}
_HTML_PAGE = (
    '<!DOCTYPE html><html lang="tr"><head><meta charset="utf-8"><title>Bing</title>'
    '<script type="text/javascript">//<![CDATA[\n_G={Region:"TR",Lang:"tr-TR",ST:(typeof si_ST!=='
    '"undefined"?si_ST:new Date),Mkt:"tr-TR",RevIpCC:"tr",RTL:false,Ver:"20",IG:"0A1B2C3D",'
    'EventID:"0123456789abcdef",V:"homepage",P:"SERP",DA:"IST",SUIH:"emulated"};\n//]]></script>'
    '</head><body><div id="b_content">Bing Chat is not available in your region.</div>'
    '</body></html>'
)


HTML = "text/html; charset=utf-8"


def to_response(connection: ServerConnection, reply: HttpReply) -> Response:
    """Turn a reply into a websockets Response (for plain HTTP on the websocket port)."""
    body = reply.body if isinstance(reply.body, str) else reply.body.decode("latin-1")
    response = connection.respond(reply.status, body)
    del response.headers["Content-Type"]
    if reply.content_type is not None:
        response.headers["Content-Type"] = reply.content_type
    for name, value in reply.headers:
        response.headers[name] = value
    return response


def _json(payload: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> HttpReply:
    """A 200 JSON reply."""
    return HttpReply(200, json.dumps(payload), headers=headers or [])


async def handle_create(emu: BingEmulator, cookie: str) -> HttpReply:
    """Answer one create request (its Cookie header given).

    The account's cookie flags come first (`emulate=expired` answers UnauthorizedRequest and
    consumes no fault use), then an explicit create fault, then `create_failure_rate` (HTTP 500).
    """
    emu.create_count += 1
    flags = cookie_flags(cookie)
    refused = account_fault(flags, creating=True)
    if refused is not None:
        value, message = ACCOUNT_FLAGS[refused]
        log.debug("create: the account's emulate=%s cookie refuses it with %s", refused, value)
        emu.fault_counts[f"create:account:{refused}"] += 1
        return _json({"result": {"value": value, "message": message}})
    fault = emu.faults.take_create()
    if fault is None:
        fault = emu.faults.roll_create(emu.random)
    if fault in COPILOT_START_FAULTS:
        fault = None  # a Copilot-only fault: Bing's create is not concerned
    if fault is not None:
        log.debug("create: applying fault %s", fault)
        emu.fault_counts[f"create:{fault}"] += 1
    if fault == "slow":
        await emu.sleep(emu.faults.slow_seconds)
    elif fault is not None:
        return _faulty(fault)
    return _success(emu, cookie, flags)


def _signature_headers(encrypted: str, signature: str) -> list[tuple[str, str]]:
    """The response headers that carry a conversation's signatures (since Oct 2023)."""
    return [("X-Sydney-Encryptedconversationsignature", encrypted),
            ("X-Sydney-Conversationsignature", signature)]


def _success(emu: BingEmulator, cookies: str, flags: frozenset[str]) -> HttpReply:
    """Register a conversation (remembering the account flags) and answer with its ids and
    signature headers."""
    signed_in = any(part.strip().startswith("_U=") and len(part.strip()) > 3
                    for part in cookies.split(";"))
    conv = new_conversation(signed_in, flags)
    emu.add_conversation(conv)
    log.debug("create: conversation registered (signed_in=%s)", signed_in)
    body = {"conversationId": conv.conversation_id, "clientId": conv.client_id,
            "result": {"value": "Success", "message": None}}
    return _json(body, _signature_headers(conv.encrypted_signature, conv.signature))


def _faulty(fault: str) -> HttpReply:
    """The reply for a create fault other than `slow`."""
    if fault in _RESULT_FAULTS:
        value, message = _RESULT_FAULTS[fault]
        return _json({"result": {"value": value, "message": message}})
    if fault in ("missing_signature", "missing_ids"):
        conv = new_conversation(signed_in=True)
        body: dict[str, Any] = {"conversationId": conv.conversation_id,
                                "result": {"value": "Success", "message": None}}
        if fault == "missing_signature":
            body["clientId"] = conv.client_id
            return _json(body)
        return _json(body, _signature_headers(conv.encrypted_signature, conv.signature))
    if fault == "html":
        return HttpReply(200, _HTML_PAGE, HTML)
    if fault == "redirect_cn":
        return HttpReply(302, "", None,
                         [("Location", "https://cn.bing.com/?cc=cn&form=REDIRECTED")])
    if fault == "empty":
        return HttpReply(200, "")
    return HttpReply(int(fault.removeprefix("http")), "", HTML)
