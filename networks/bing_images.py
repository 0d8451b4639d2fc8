"""Bing's image endpoints over the shared httpx client (PROTOCOL.md §6): kblob upload, Image Creator
pages and bounded downloads, all off BING_WEB_URL; and Copilot's attachment upload (§7.2).
Transport failures become `ProxyError`s; what the answers mean is read in `conversations/` (with
`messagers/images.py`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from networks.headers import USER_AGENT
from utils.errors import ProxyError, UpstreamTimeout, UpstreamUnreachable
from utils.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebAnswer:
    """A bing.com answer: status, redirect target (or ''), body text."""

    status: int
    location: str
    text: str


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


async def post_kblob(
    http: httpx.AsyncClient, settings: Settings, cookies: str, knowledge: dict[str, Any], image: bytes
) -> WebAnswer:
    """POST the picture (base64) and its `knowledgeRequest` to BING_WEB_URL/images/kblob."""
    fields = {
        "knowledgeRequest": (None, json.dumps(knowledge)),
        "imageBase64": (None, base64.b64encode(image).decode()),
    }
    url = f"{settings.web_base}/images/kblob"
    response = await send(
        http, "POST", url, "image upload", files=fields, headers=web_headers(settings, cookies)
    )
    return web_answer(response)


async def post_attachment(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str], image: bytes, content_type: str
) -> WebAnswer:
    """POST the raw picture to Copilot's COPILOT_URL/c/api/attachments (PROTOCOL.md §7.2)."""
    url = f"{settings.copilot_url.rstrip('/')}/c/api/attachments"
    sent = {**headers, "Content-Type": content_type}
    return web_answer(await send(http, "POST", url, "Copilot image upload", content=image, headers=sent))


async def post_create(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str], prompt: str, rt: str
) -> WebAnswer:
    """POST BING_WEB_URL/images/create for `prompt` (redirects not followed)."""
    url = f"{settings.web_base}/images/create?q={quote(prompt)}&rt={rt}&FORM=GENCRE"
    data = {"q": prompt, "qs": "ds"}
    return web_answer(await send(http, "POST", url, "Image Creator", data=data, headers=headers))


async def get_page(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> WebAnswer:
    """GET one Image Creator page (redirects not followed)."""
    return web_answer(await send(http, "GET", url, "Image Creator", headers=headers))


def web_answer(response: httpx.Response) -> WebAnswer:
    """The parts of a response the image flows read."""
    return WebAnswer(response.status_code, response.headers.get("location", ""), response.text)


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
