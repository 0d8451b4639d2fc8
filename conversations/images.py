"""Images for the routes: a chat plan's picture made ready, and `POST /v1/images/generations`.

Bing's Image Creator runs on a signed-in account from the AccountPool (its concurrency cap applies)
and fails over, up to FAILOVER_ATTEMPTS, to another account when one has no boosts left, is not
signed in, or Bing cannot be reached. Those failures never bench the account for chat. When the
request names a Copilot model, Copilot draws instead: one chat turn per picture, through the shared
turn loop (its accounts, failover and limits), and its `imageGenerated` pictures are the answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from conversations.accounts import Account
from conversations.creator import create_images
from conversations.models import BING, COPILOT, ModelSpec, resolve_model
from conversations.plan import plan_turn
from conversations.turn import TurnPlan, Upstream, open_answer
from conversations.vision import prepare_attachment
from messagers.events import Finished
from networks.bing_images import download
from utils.errors import (
    ImageCoinsExhausted,
    ImageSignInRequired,
    InvalidRequest,
    ModelNotFound,
    ProxyError,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamUnreachable,
)
from utils.settings import Settings

log = logging.getLogger(__name__)
IMAGES_PER_PROMPT = 4  # what one Image Creator run makes
COPILOT_DRAW_REQUEST = "Create an image of: "
RETRYABLE = (ImageCoinsExhausted, ImageSignInRequired, UpstreamAuthFailed, UpstreamUnreachable)


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One `images.generate` request, validated."""

    prompt: str
    n: int
    response_format: str  # "url" | "b64_json"
    copilot: ModelSpec | None = None  # the Copilot model that draws; None: Bing's Image Creator


async def prepare_plan_images(plan: TurnPlan, upstream: Upstream) -> TurnPlan:
    """The plan with its prompt's picture decoded or fetched, checked and downscaled (400 otherwise)."""
    image = plan.prompt.image
    if image is None:
        return plan
    ready = await prepare_attachment(image, upstream.http, upstream.settings)
    return replace(plan, prompt=replace(plan.prompt, image=ready))


def image_job(
    prompt: str, n: int | None, response_format: str | None, model: str | None, settings: Settings
) -> ImageJob:
    """Validate an images request; raises InvalidRequest."""
    copilot = copilot_model(model, settings)
    max_chars = settings.copilot_max_prompt_chars if copilot is not None else settings.max_prompt_chars
    text = prompt.strip()
    if not text:
        raise InvalidRequest("The prompt is empty.", param="prompt")
    if len(text) > max_chars:
        raise InvalidRequest(
            f"The prompt has {len(text)} characters; at most {max_chars} are accepted.", param="prompt"
        )
    count = 1 if n is None else n
    if not 1 <= count <= IMAGES_PER_PROMPT:
        raise InvalidRequest(
            f"Bing makes 1 to {IMAGES_PER_PROMPT} images per prompt: `n` must be in that range.", param="n"
        )
    return ImageJob(text, count, response_format or "url", copilot)


def copilot_model(model: str | None, settings: Settings) -> ModelSpec | None:
    """The Copilot model named by `model` (an id or alias), else None: OpenAI's image model names
    (`dall-e-3`, ...), Bing's chat models and no model at all mean Bing's Image Creator."""
    if not model:
        return None
    try:
        spec = resolve_model(model, settings.alias_map, settings.default_model)
    except ModelNotFound:
        return None
    return spec if spec.upstream == COPILOT else None


async def generate_images(job: ImageJob, upstream: Upstream) -> dict[str, Any]:
    """The OpenAI images response for `job`; raises ProxyError."""
    if job.copilot is not None:
        urls = await copilot_images(job.prompt, job.n, job.copilot, upstream)
    else:
        urls = (await create_with_failover(job.prompt, upstream))[: job.n]
    if job.response_format == "b64_json":
        encoded = await asyncio.gather(*(image_base64(url, upstream) for url in urls))
        data = [{"b64_json": text} for text in encoded]
    else:
        data = [{"url": url} for url in urls]
    return {"created": int(time.time()), "data": data}


async def create_with_failover(prompt: str, upstream: Upstream) -> list[str]:
    """Image Creator on signed-in accounts, the next one after an account-level failure."""
    accounts = upstream.accounts
    bing = accounts.serving(BING)
    tried = {a.name for a in bing if not signed_in(a)}
    if len(tried) == len(bing):
        raise ImageSignInRequired(
            "Image creation needs a signed-in Bing account (a `_U` cookie); none is configured."
        )
    failures: list[UpstreamError] = []
    while True:
        account = await accounts.acquire(tried, upstream.settings.create_timeout)
        if account is None:
            raise failures[-1] if failures else accounts.unavailable_error()
        failure: UpstreamError | None = None
        try:
            return await create_images(upstream.http, upstream.settings, account.cookies, prompt)
        except UpstreamError as exc:
            failure = exc
            failures.append(exc)
            if not isinstance(exc, RETRYABLE) or len(failures) >= upstream.settings.failover_attempts:
                raise
            log.info("image creation failed on account %s (%s); failing over", account.name, exc.code)
            tried.add(account.name)
        finally:
            await accounts.release(account, failure)


async def copilot_images(prompt: str, n: int, model: ModelSpec, upstream: Upstream) -> list[str]:
    """Up to `n` pictures from Copilot, one drawing turn after another until there are enough."""
    urls: list[str] = []
    while len(urls) < n:
        urls += await copilot_drawing(prompt, model, upstream)
    return urls[:n]


async def copilot_drawing(prompt: str, model: ModelSpec, upstream: Upstream) -> list[str]:
    """One fresh Copilot turn asking for a picture; its `imageGenerated` URLs (502 when none)."""
    messages = [{"role": "user", "content": f"{COPILOT_DRAW_REQUEST}{prompt}"}]
    plan = plan_turn(messages, model.id, (), upstream.settings, "images")
    answer = await open_answer(plan, upstream)
    async with aclosing(answer.events()) as events:
        async for event in events:
            if isinstance(event, Finished) and event.images:
                return [image.url for image in event.images]
    raise UpstreamBadResponse("Copilot answered without making a picture.")


def signed_in(account: Account) -> bool:
    """Image Creator needs Bing's `_U` sign-in cookie."""
    return any(
        part.strip().startswith("_U=") and len(part.strip()) > 3 for part in account.cookies.split(";")
    )


async def image_base64(url: str, upstream: Upstream) -> str:
    """One of Bing's pictures fetched and base64-encoded (for `response_format: b64_json`)."""
    settings = upstream.settings

    def failure(reason: str) -> ProxyError:
        return UpstreamBadResponse(f"Fetching a picture Bing made failed: {reason}.")

    fetched = await download(
        upstream.http,
        url,
        max_bytes=settings.max_image_bytes,
        timeout=settings.image_fetch_timeout,
        failure=failure,
    )
    return base64.b64encode(fetched.content).decode()
