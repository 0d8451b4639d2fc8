"""API keys: `Authorization: Bearer <key>` (or Azure-style `api-key`), compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from utils.errors import InvalidApiKey, PermissionDenied


def supplied_key(request: Request) -> str:
    """The key the caller sent, or ''."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    return request.headers.get("api-key", "").strip()


async def require_api_key(request: Request) -> None:
    """Pass when API_KEYS is empty or the caller sent one of them; raise InvalidApiKey otherwise."""
    keys = request.app.state.settings.api_key_list
    if not keys:
        return
    key = supplied_key(request).encode()
    if not any(hmac.compare_digest(key, allowed.encode()) for allowed in keys):
        raise InvalidApiKey(
            "Incorrect or missing API key. Send `Authorization: Bearer <key>` with a key from API_KEYS."
        )


async def require_admin_key(request: Request) -> None:
    """The operator views need ADMIN_KEY (as a Bearer token); without one set they are off."""
    admin_key = request.app.state.settings.admin_key
    if not admin_key:
        raise PermissionDenied("The account view is off: set ADMIN_KEY to enable it.")
    if not hmac.compare_digest(supplied_key(request).encode(), admin_key.encode()):
        raise InvalidApiKey("This view needs the admin key (ADMIN_KEY) as `Authorization: Bearer <key>`.")
