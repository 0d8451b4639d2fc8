"""Image creation inside a chat turn (PROTOCOL.md §6.1): when Bing's answer asks for a picture, run
Image Creator with the same account and add the pictures to the answer as markdown images. A picture
Copilot made (its `imageGenerated`, §7.3) is added to the content the same way.

While Image Creator works nothing goes into `content` (a stream only carries its `: ping`
comments). A blocked prompt ends the answer with a short note and `finish_reason:
"content_filter"`; any other failure (0 coins, a timeout, placeholder pictures) is an error with
its own status and code: before the first byte as the response, after it in-band.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

import httpx

from conversations.creator import create_images
from messagers.events import AnswerEvent, ContentDelta, Finished, ImageGenerated, ImageRequested, Waiting
from messagers.images import image_markdown
from utils.errors import ContentPolicyViolation, ImageCreationFailed, ProxyError
from utils.settings import Settings

BLOCKED_NOTE = "_(Bing's Image Creator blocked this image prompt, so no picture was made.)_"


async def with_images(
    events: AsyncGenerator[AnswerEvent, None], http: httpx.AsyncClient, settings: Settings, cookies: str
) -> AsyncGenerator[AnswerEvent, None]:
    """The turn's events, each `ImageRequested` replaced by the pictures (or a note, or an error)."""
    sent, blocked = False, False
    async with aclosing(events) as source:
        async for event in source:
            if isinstance(event, ImageRequested):
                if not sent:
                    yield Waiting()  # a stream may open now; pings cover the wait
                text, refused = await draw(event.prompt, http, settings, cookies)
                blocked = blocked or refused
                yield ContentDelta(("\n\n" if sent else "") + text)
                sent = True
                continue
            if isinstance(event, ImageGenerated):  # Copilot made it: show it in the content too
                markdown = image_markdown([event.image.url], event.image.prompt or "image")
                yield ContentDelta(("\n\n" if sent else "") + markdown)
                sent = True
                continue
            if isinstance(event, Finished) and blocked:
                event = replace(event, reason="content_filter")
            sent = sent or isinstance(event, ContentDelta)
            yield event


async def draw(prompt: str, http: httpx.AsyncClient, settings: Settings, cookies: str) -> tuple[str, bool]:
    """(markdown images, False), or (the blocked note, True); raises ImageCreationFailed otherwise."""
    try:
        urls = await create_images(http, settings, cookies, prompt)
    except ContentPolicyViolation:
        return BLOCKED_NOTE, True
    except ProxyError as exc:
        raise ImageCreationFailed(exc) from exc
    return image_markdown(urls, prompt), False
