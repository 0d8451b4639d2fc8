"""Choosing the outbound proxy for an upstream URL, from settings only (never from os.environ)."""

from __future__ import annotations

from urllib.parse import urlsplit

from utils.settings import Settings, split_list

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_SECURE = {"https", "wss"}


def pick_proxy(url: str, settings: Settings) -> str | None:
    """The proxy URL for `url`: BING_PROXY, else HTTPS_/HTTP_/ALL_PROXY minus NO_PROXY hosts."""
    if settings.bing_proxy:
        return settings.bing_proxy
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK or bypasses(host, settings.no_proxy or ""):
        return None
    scheme_proxy = settings.https_proxy if parts.scheme in _SECURE else settings.http_proxy
    return scheme_proxy or settings.all_proxy or None


def bypasses(host: str, no_proxy: str) -> bool:
    """True when NO_PROXY names `host`, a parent domain of it, or `*`."""
    for entry in split_list(no_proxy.lower()):
        if entry == "*":
            return True
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False
