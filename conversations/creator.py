"""Bing's Image Creator flow (PROTOCOL.md §6.1) with one account's cookies: the POST and its
redirect, the polling, the result page, and what each refusal means for the client (§8)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, urljoin

import httpx

from messagers.images import (
    Refusal,
    create_request_id,
    find_refusal,
    is_placeholder,
    parse_result_page,
    read_poll,
)
from networks.bing_images import get_page, post_create, web_headers
from utils.errors import (
    ContentPolicyViolation,
    ImageCoinsExhausted,
    ImageSignInRequired,
    InvalidRequest,
    ProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
)
from utils.settings import Settings

log = logging.getLogger(__name__)
REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
        answer = await post_create(http, settings, headers, prompt, rt)
        if answer.status in REDIRECTS:
            request_id = create_request_id(answer.location)
            if request_id is None:
                raise ImageSignInRequired(
                    "Bing's Image Creator wants a signed-in account (a `_U` cookie); this one is not."
                )
            await get_page(
                http, urljoin(settings.web_base + "/", answer.location.replace("&nfy=1", "")), headers
            )
            return request_id
        refusal = find_refusal(answer.text)
        if refusal is not None:
            raise refusal_error(refusal)
        if answer.status in (401, 403):
            raise ImageSignInRequired(f"Bing's Image Creator refused the account (HTTP {answer.status}).")
        log.info("Image Creator answered HTTP %d without a redirect (rt=%s)", answer.status, rt)
    raise UpstreamBadResponse("Bing's Image Creator did not accept the prompt (no redirect to its results).")


async def poll_results(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str], prompt: str, request_id: str
) -> str:
    """Poll the results endpoint every IMAGE_POLL_INTERVAL s until the page is ready; returns it."""
    url = f"{settings.web_base}/images/create/async/results/{quote(request_id, safe='')}?q={quote(prompt)}"
    while True:
        answer = await get_page(http, url, headers)
        if answer.status == 200:
            poll = read_poll(answer.text)
            if poll.refusal is not None:
                raise refusal_error(poll.refusal)
            if poll.ready:
                return poll.page
        elif answer.status >= 400:
            raise UpstreamBadResponse(f"Bing's Image Creator results answered HTTP {answer.status}.")
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
