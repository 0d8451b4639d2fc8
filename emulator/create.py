"""GET /turing/conversation/create, answered as plain HTTP on the websocket port."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

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


def respond(connection: ServerConnection, status: int, body: str,
             content_type: str | None = "application/json; charset=utf-8") -> Response:
    """Build a plain HTTP response with the given Content-Type."""
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    if content_type is not None:
        response.headers["Content-Type"] = content_type
    return response


def _json(connection: ServerConnection, payload: dict[str, Any]) -> Response:
    """Build a 200 JSON response."""
    return respond(connection, 200, json.dumps(payload))


async def handle_create(emu: BingEmulator, connection: ServerConnection,
                        request: Request) -> Response:
    """Answer one create request, applying the current create fault."""
    emu.create_count += 1
    fault = emu.faults.take_create()
    if fault is not None:
        log.debug("create: applying fault %s", fault)
    if fault == "slow":
        await emu.sleep(emu.faults.slow_seconds)
    elif fault is not None:
        return _faulty(connection, fault)
    return _success(emu, connection, request)


def _success(emu: BingEmulator, connection: ServerConnection, request: Request) -> Response:
    """Register a conversation and answer with its ids and signature headers."""
    cookies = request.headers.get("Cookie", "")
    signed_in = any(part.strip().startswith("_U=") and len(part.strip()) > 3
                    for part in cookies.split(";"))
    conv = new_conversation(signed_in)
    emu.add_conversation(conv)
    log.debug("create: conversation registered (signed_in=%s)", signed_in)
    body = {"conversationId": conv.conversation_id, "clientId": conv.client_id,
            "result": {"value": "Success", "message": None}}
    response = _json(connection, body)
    response.headers["X-Sydney-Encryptedconversationsignature"] = conv.encrypted_signature
    response.headers["X-Sydney-Conversationsignature"] = conv.signature
    return response


def _faulty(connection: ServerConnection, fault: str) -> Response:
    """Build the response for a create fault other than `slow`."""
    if fault in _RESULT_FAULTS:
        value, message = _RESULT_FAULTS[fault]
        return _json(connection, {"result": {"value": value, "message": message}})
    if fault in ("missing_signature", "missing_ids"):
        conv = new_conversation(signed_in=True)
        body: dict[str, Any] = {"conversationId": conv.conversation_id,
                                "result": {"value": "Success", "message": None}}
        if fault == "missing_signature":
            body["clientId"] = conv.client_id
            return _json(connection, body)
        response = _json(connection, body)
        response.headers["X-Sydney-Encryptedconversationsignature"] = conv.encrypted_signature
        response.headers["X-Sydney-Conversationsignature"] = conv.signature
        return response
    if fault == "html":
        return respond(connection, 200, _HTML_PAGE, "text/html; charset=utf-8")
    if fault == "redirect_cn":
        response = respond(connection, 302, "", None)
        response.headers["Location"] = "https://cn.bing.com/?cc=cn&form=REDIRECTED"
        return response
    if fault == "empty":
        return respond(connection, 200, "")
    status = int(fault.removeprefix("http"))
    return respond(connection, status, "", "text/html; charset=utf-8")


def reject_upgrade(connection: ServerConnection, status: int) -> Response:
    """Build the HTTP response that refuses a websocket upgrade."""
    return respond(connection, status, "", "text/html; charset=utf-8")
