"""Path tolerance: trailing slashes and a doubled `/v1` land on the same routes (OPENAI.md §1)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


def normalize_path(path: str) -> str:
    """`/v1/v1/x` -> `/v1/x`; `/x/` -> `/x`."""
    while path.startswith("/v1/v1/"):
        path = path[3:]
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class NormalizePath:
    """Rewrite the request path before routing, without a redirect (preflights do not follow them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = normalize_path(scope["path"])
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)
