"""Bing's image endpoints over the shared httpx client (PROTOCOL.md §6): kblob upload, Image Creator,
and bounded downloads. Every endpoint hangs off BING_WEB_URL; every failure becomes a `ProxyError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from messagers.images import (
    Refusal,
    blob_image_url,
    create_request_id,
    find_refusal,
    is_placeholder,
    kblob_blob_id,
    kblob_request,
    parse_result_page,
    read_poll,
)
from networks.headers import USER_AGENT
from utils.errors import (
    ContentPolicyViolation,
    ImageCoinsExhausted,
    ImageSignInRequired,
    InvalidImage,
    InvalidRequest,
    ProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from utils.settings import Settings

log = logging.getLogger(__name__)
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Download:
    """Bytes fetched from a URL and the type the server declared."""

    content: bytes
    content_type: str


def web_headers(settings: Settings, cookies: str) -> dict[str, str]:
    """Browser-like headers for the bing.com web endpoints; the Cookie header only with cookies."""
    locale = settings.bing_locale
    headers = {
        "User-Agent": USER_AGENT,
        "Accept-Language": f"{locale},{locale.split('-')[0]};q=0.9",
        "Origin": settings.web_base,
        "Referer": f"{settings.web_base}/search?q=Bing+AI&showconv=1",
    }
    if cookies:
        headers["Cookie"] = cookies
    return headers


async def send(http: httpx.AsyncClient, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """One request to Bing; transport failures become 504/502 errors naming `what`."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"Bing's {what} did not answer in time.") from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(f"Could not reach Bing's {what} ({type(exc).__name__}).") from exc


async def upload_image(
    http: httpx.AsyncClient, settings: Settings, cookies: str, image: bytes, conversation_id: str, tone: str
) -> str:
    """Upload `image` to kblob for this conversation; returns the `imageUrl` for the chat frame.

    Raises InvalidImage (400) when Bing refuses the picture (no blobId), UpstreamBadResponse (502)
    for any other answer, and the transport errors of `send`.
    """
    fields = {
        "knowledgeRequest": (None, json.dumps(kblob_request(conversation_id, tone))),
        "imageBase64": (None, base64.b64encode(image).decode()),
    }
    url = f"{settings.web_base}/images/kblob"
    response = await send(
        http, "POST", url, "image upload", files=fields, headers=web_headers(settings, cookies)
    )
    if response.status_code != 200:
        raise UpstreamBadResponse(f"Bing's image upload answered HTTP {response.status_code}.")
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamBadResponse("Bing's image upload answered something other than JSON.") from exc
    blob_id = kblob_blob_id(body)
    if blob_id is None:
        raise InvalidImage(
            "Bing refused the uploaded image (no blobId): try another picture.", param="messages"
        )
    return blob_image_url(settings.web_base, blob_id)


async def download(
    http: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    failure: Callable[[str], ProxyError],
) -> Download:
    """GET `url` (redirects followed) within `timeout` seconds and `max_bytes`; `failure(reason)`
    builds the error for anything else."""
    try:
        async with asyncio.timeout(timeout):
            return await read_capped(http, url, max_bytes, failure)
    except TimeoutError as exc:
        raise failure(f"it took longer than {timeout:g} s") from exc
    except httpx.TimeoutException as exc:
        raise failure(f"it took longer than {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise failure(f"it could not be fetched ({type(exc).__name__})") from exc


async def read_capped(
    http: httpx.AsyncClient, url: str, max_bytes: int, failure: Callable[[str], ProxyError]
) -> Download:
    """The body of `url`, refusing more than `max_bytes` (declared or counted as it arrives)."""
    async with http.stream("GET", url, follow_redirects=True, headers={"User-Agent": USER_AGENT}) as response:
        if response.status_code != 200:
            raise failure(f"its server answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise failure(f"it is larger than {max_bytes} bytes")
        parts, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise failure(f"it is larger than {max_bytes} bytes")
            parts.append(chunk)
        return Download(b"".join(parts), response.headers.get("content-type", ""))


async def create_images(http: httpx.AsyncClient, settings: Settings, cookies: str, prompt: str) -> list[str]:
    """Run Image Creator for `prompt` with the account's cookies; returns the image URLs.

    Raises ContentPolicyViolation (blocked or under review), ImageCoinsExhausted (0 coins),
    ImageSignInRequired (not signed in), UpstreamTimeout (not ready within IMAGE_CREATE_TIMEOUT) and
    UpstreamBadResponse (placeholder images, no images, unexpected answers).
    """
    headers = web_headers(settings, cookies)
    try:
        async with asyncio.timeout(settings.image_create_timeout):
            request_id = await start_creation(http, settings, headers, prompt)
            page = await poll_results(http, settings, headers, prompt, request_id)
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"Bing's Image Creator did not finish within {settings.image_create_timeout:g} s "
            "(IMAGE_CREATE_TIMEOUT)."
        ) from exc
    return checked_urls(page)


async def start_creation(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str], prompt: str
) -> str:
    """POST /images/create (rt=4, then rt=3) and follow its redirect; returns the request id."""
    for rt in ("4", "3"):
        url = f"{settings.web_base}/images/create?q={quote(prompt)}&rt={rt}&FORM=GENCRE"
        response = await send(
            http, "POST", url, "Image Creator", data={"q": prompt, "qs": "ds"}, headers=headers
        )
        if response.status_code in REDIRECTS:
            location = response.headers.get("location", "")
            request_id = create_request_id(location)
            if request_id is None:
                raise ImageSignInRequired(
                    "Bing's Image Creator wants a signed-in account (a `_U` cookie); this one is not."
                )
            follow = urljoin(settings.web_base + "/", location.replace("&nfy=1", ""))
            await send(http, "GET", follow, "Image Creator", headers=headers)
            return request_id
        refusal = find_refusal(response.text)
        if refusal is not None:
            raise refusal_error(refusal)
        if response.status_code in (401, 403):
            raise ImageSignInRequired(
                f"Bing's Image Creator refused the account (HTTP {response.status_code})."
            )
        log.info("Image Creator answered HTTP %d without a redirect (rt=%s)", response.status_code, rt)
    raise UpstreamBadResponse("Bing's Image Creator did not accept the prompt (no redirect to its results).")


async def poll_results(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str], prompt: str, request_id: str
) -> str:
    """Poll the results endpoint every IMAGE_POLL_INTERVAL s until the page is ready; returns it."""
    url = f"{settings.web_base}/images/create/async/results/{quote(request_id, safe='')}?q={quote(prompt)}"
    while True:
        response = await send(http, "GET", url, "Image Creator", headers=headers)
        if response.status_code == 200:
            poll = read_poll(response.text)
            if poll.refusal is not None:
                raise refusal_error(poll.refusal)
            if poll.ready:
                return poll.page
        elif response.status_code >= 400:
            raise UpstreamBadResponse(f"Bing's Image Creator results answered HTTP {response.status_code}.")
        await asyncio.sleep(settings.image_poll_interval)


def checked_urls(page: str) -> list[str]:
    """The image URLs of a results page; placeholders or none at all are a failure."""
    urls = parse_result_page(page)
    if not urls:
        raise UpstreamBadResponse("Bing's Image Creator finished without any image.")
    if any(is_placeholder(url) for url in urls):
        raise UpstreamBadResponse(
            "Bing's Image Creator answered placeholder pictures (bad images): no image was made."
        )
    return urls


def refusal_error(refusal: Refusal) -> ProxyError:
    """The client's error for a refusal stated by Image Creator (PROTOCOL.md §8)."""
    if refusal in (Refusal.BLOCKED, Refusal.PENDING):
        return ContentPolicyViolation(
            "Bing's Image Creator blocked this prompt (content policy).", param="prompt"
        )
    if refusal is Refusal.REVIEWED:
        return ContentPolicyViolation(
            "Bing's Image Creator is reviewing this prompt and will not draw it now (content policy).",
            param="prompt",
        )
    if refusal is Refusal.LANGUAGE:
        return InvalidRequest(
            "Bing's Image Creator does not support this prompt's language yet.",
            param="prompt",
            code="unsupported_language",
        )
    if refusal is Refusal.NO_COINS:
        return ImageCoinsExhausted(
            "Bing's Image Creator has no boosts left for this account (0 coins available); retry later.",
            headers={"Retry-After": "3600", "x-should-retry": "false"},
        )
    return UpstreamBadResponse("Bing's Image Creator says it cannot create images right now.")
