"""Conversation create over one shared `httpx.AsyncClient`; every failure becomes a `ProxyError`."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

from networks.headers import create_headers, fresh_create_headers, stable_create_headers
from networks.lean_transport import LeanTransport
from utils.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRegionBlocked,
    UpstreamTimeout,
    UpstreamUnreachable,
    result_error,
)
from utils.proxy import pick_proxy
from utils.settings import Settings

log = logging.getLogger(__name__)
# Concurrent creates: httpcore's pool rescans every connection for every queued request, so a long
# queue inside it costs quadratic CPU; callers queue on a semaphore of this size instead.
CREATE_CONNECTIONS = 8
HeaderPairs = tuple[tuple[str, str], ...]
MERGED_CACHE_SIZE = 64  # accounts' header sets kept merged (more are merged again as needed)
URL_CACHE_SIZE = 16  # distinct URLs sent through `get_direct` (in practice one: BING_CREATE_URL)
_TITLE = re.compile(rb"<title>([^<]{0,80})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SessionIds:
    """What create hands back, needed to open the socket and address the conversation."""

    conversation_id: str
    client_id: str
    access_token: str  # X-Sydney-Encryptedconversationsignature, sent as sec_access_token
    signature: str | None = None  # X-Sydney-Conversationsignature (or the pre-2023 body field)


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The process-wide client: explicit timeouts and proxy, no environment magic, no cookie jar use.

    Without a proxy, the hosts called on every request (create, Copilot's start) go through the
    lean transport (LEAN_HTTP); everything else, images fetched from users' URLs included, through
    httpx's own."""
    timeout = httpx.Timeout(settings.create_timeout, connect=settings.connect_timeout)
    proxy = pick_proxy(settings.bing_create_url, settings)
    lean = LeanTransport(max_connections=CREATE_CONNECTIONS) if settings.lean_http and proxy is None else None
    return UpstreamHttp(
        lean=lean,
        lean_origins=hot_origins(settings) if lean is not None else set(),
        timeout=timeout,
        proxy=proxy,
        trust_env=False,
        limits=httpx.Limits(max_connections=CREATE_CONNECTIONS, max_keepalive_connections=CREATE_CONNECTIONS),
    )


def hot_origins(settings: Settings) -> set[str]:
    """`scheme://host[:port]` of the create and Copilot start URLs, as httpx mount patterns."""
    origins = set()
    for url in (settings.bing_create_url, settings.copilot_url):
        parsed = httpx.URL(url)
        if parsed.scheme in ("http", "https") and parsed.host:
            host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host  # IPv6 literal
            port = f":{parsed.port}" if parsed.port else ""
            origins.add(f"{parsed.scheme}://{host}{port}")
    return origins


class _NoJar(CookieJar):
    """A jar no cookie gets into, by any path (an answer's Set-Cookie, `cookies.set`, `update`)."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _NeverKept(httpx.Cookies):
    """The client's cookies: always empty, and an answer's Set-Cookie is not even parsed. The
    client is shared by all accounts: one answer's cookie must never ride along with another
    account's request (each sends its own Cookie header)."""

    def __init__(self) -> None:
        super().__init__()
        self.jar = _NoJar()

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class UpstreamHttp(httpx.AsyncClient):
    """The shared client. It is used by all accounts at once, so it keeps no cookies: each request
    carries its account's own Cookie header, and no answer's Set-Cookie rides along with another.

    `lean` is mounted for `lean_origins` (the hosts called on every request)."""

    def __init__(
        self, *, lean: LeanTransport | None = None, lean_origins: Collection[str] = (), **kwargs: Any
    ) -> None:
        mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
        if lean is not None:
            mounts = {origin: lean for origin in lean_origins}
        super().__init__(mounts=mounts, **kwargs)
        self._lean = lean
        self._lean_prefixes = tuple(f"{origin}/" for origin in lean_origins)
        self._timeouts = self.timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}  # parsed once: the create URL is the same every time
        self._merged: dict[HeaderPairs, httpx.Headers] = {}  # per account: with the client's own

    async def get_direct(
        self, url: str, headers: HeaderPairs, fresh: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """`get(url, headers=headers + fresh)`, read, with the lean transport taking the request
        straight when it serves `url`. The client's own layers would do nothing there (this client
        has no auth, follows no redirect, keeps no cookie) but cost a fifth of a millisecond, on the
        path of every request that creates a conversation. `headers` (the same for an account) are
        merged with the client's own once and kept; `fresh` ones are added on each call."""
        if self._lean is None or not url.startswith(self._lean_prefixes):
            return await self.get(url, headers=[*headers, *(fresh or {}).items()])
        merged = self._merged.get(headers)
        if merged is None:
            if len(self._merged) >= MERGED_CACHE_SIZE:
                self._merged.clear()
            merged = self._merged[headers] = httpx.Headers(self.headers)
            merged.update(dict(headers))
        if fresh:
            merged = merged.copy()
            merged.update(fresh)
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request("GET", parsed, headers=merged, extensions={"timeout": self._timeouts})
        response = await self._lean.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except BaseException:  # as httpx's own `send` does: never leave the connection checked out
            await response.aclose()
            raise
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        return _NEVER_KEPT

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        """Ignored: the shared client never holds cookies."""


_NEVER_KEPT = _NeverKept()


async def create_conversation(http: httpx.AsyncClient, settings: Settings, cookies: str) -> SessionIds:
    """Create a Bing conversation for the account `cookies`; raises an `UpstreamError` on any failure."""
    try:
        url = settings.bing_create_url
        if isinstance(http, UpstreamHttp):
            stable = stable_create_headers(cookies, settings.bing_locale)
            response = await http.get_direct(url, stable, fresh_create_headers())
        else:
            response = await http.get(url, headers=create_headers(cookies, settings.bing_locale))
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"Creating a Bing conversation took longer than {settings.create_timeout:g} s."
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(
            f"Could not reach Bing to create a conversation ({type(exc).__name__})."
        ) from exc
    return read_create_response(response)


def read_create_response(response: httpx.Response) -> SessionIds:
    """Validate a create response (status, content type, result, ids) into `SessionIds`."""
    status_error = create_status_error(response)
    if status_error is not None:
        raise status_error
    body = create_body(response)
    result = body.get("result")
    result = result if isinstance(result, dict) else {}
    value, message = result.get("value"), result.get("message") or ""
    if value is not None and value != "Success":
        raise create_result_error(str(value), str(message))
    return session_ids(body, response.headers)


def create_status_error(response: httpx.Response) -> UpstreamError | None:
    """The error for a non-200 create answer, if it is one."""
    status = response.status_code
    if status == 200:
        return None
    location = response.headers.get("location", "")
    if 300 <= status < 400:
        if "cn.bing.com" in location:
            return UpstreamRegionBlocked(
                "Bing redirected to cn.bing.com: this IP or account is region-locked."
            )
        return UpstreamBadResponse(f"Bing answered create with a redirect (HTTP {status}).")
    if status == 404:
        return UpstreamRateLimited(
            "Bing refused to create a conversation (HTTP 404): usually too many new conversations; "
            "it can also mean this IP's region is blocked.",
            headers={"Retry-After": "15"},
        )
    if status == 429:
        return UpstreamRateLimited(
            "Bing rate-limited conversation create (HTTP 429).", headers={"Retry-After": "15"}
        )
    if status in (401, 403):
        return UpstreamAuthFailed(f"Bing rejected the service's account cookies (HTTP {status} on create).")
    return UpstreamBadResponse(f"Bing answered create with HTTP {status}.")


def create_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200 create answer; a web page or junk becomes a clear error."""
    content_type = response.headers.get("content-type", "")
    if "html" in content_type or response.content.lstrip()[:1] == b"<":
        title = _TITLE.search(response.content)
        log.warning(
            "create answered HTML (%d bytes, title %r)",
            len(response.content),
            title.group(1).decode(errors="replace") if title else None,
        )
        return _raise(
            UpstreamRegionBlocked(
                "Bing answered with a web page instead of JSON: a region or IP block, a challenge "
                "page or bot detection. Try another IP or proxy (BING_PROXY) or fresh cookies."
            )
        )
    try:
        body = response.json()
    except ValueError:
        return _raise(UpstreamBadResponse("Bing's create answer was not JSON."))
    if not isinstance(body, dict):
        return _raise(UpstreamBadResponse("Bing's create answer was not a JSON object."))
    return body


def create_result_error(value: str, message: str) -> UpstreamError:
    """The error for a create `result.value` other than Success."""
    error = result_error(value, message)
    if type(error) is UpstreamBadResponse:
        return UpstreamBadResponse(f"Bing refused to create a conversation: {error.message}")
    return error


def session_ids(body: dict[str, Any], headers: httpx.Headers) -> SessionIds:
    """Ids from the body, signatures from the headers (since Oct 2023) or the body (before)."""
    conversation_id, client_id = body.get("conversationId"), body.get("clientId")
    token = headers.get("x-sydney-encryptedconversationsignature") or body.get("conversationSignature")
    signature = headers.get("x-sydney-conversationsignature") or body.get("conversationSignature")
    if not (isinstance(conversation_id, str) and conversation_id and client_id and token):
        missing = [
            name
            for name, present in (
                ("conversationId", conversation_id),
                ("clientId", client_id),
                ("signature", token),
            )
            if not present
        ]
        raise UpstreamBadResponse(f"Bing's create answer lacks {', '.join(missing)}.")
    return SessionIds(conversation_id, str(client_id), str(token), signature)


def _raise(error: UpstreamError) -> dict[str, Any]:
    raise error
