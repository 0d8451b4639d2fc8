"""Chat turns that ask the client to draw: a short answer, then a `GenerateContentQuery` (IMAGE).

Only tones whose `optionsSets` carry `gencontentv3` (Creative, Precise) draw (PROTOCOL.md §6.1).
A prompt asks for a picture when it carries `emulate:draw` (`emulate:draw=quiet`: no answer text,
only the query), an Image Creator fault directive (`emulate:image_blocked`, ...; carried into the
image prompt so Image Creator applies it), or starts like a drawing request ("draw ...", "create an
image of ..."), unless it carries `emulate:no_image`. The Copilot emulator draws on the same cue
(one `imageGenerated` picture).
"""

from __future__ import annotations

import re
import uuid

from . import frames
from .faults import Directives, strip_directives
from .frames import Record
from .text import prefixes
from .turns import Turn, TurnContext

DRAW_TEXT = "I'll try to create that."
_DRAW_REQUEST = re.compile(
    r"^\s*(?:please\s+)?(?:draw|paint|sketch|(?:create|generate|make)\s+(?:an?\s+)?(?:image|picture|drawing)"
    r"\s+of)\b[\s:,]*",
    re.IGNORECASE,
)


def wants_drawing(prompt: str, directives: Directives) -> bool:
    """Whether the emulated Bing answers this prompt with a GenerateContentQuery."""
    if directives.draw == "no":
        return False
    return directives.draw is not None or bool(_DRAW_REQUEST.match(strip_directives(prompt)))


def image_prompt(prompt: str, directives: Directives) -> str:
    """What Bing asks Image Creator to draw: the subject, plus an Image Creator fault directive."""
    subject = _DRAW_REQUEST.sub("", strip_directives(prompt), count=1).strip() or "a picture"
    return f"{subject} emulate:{directives.image_fault}" if directives.image_fault else subject


def content_query(prompt: str, request_id: str) -> Record:
    """The bot message asking the client to run Image Creator for `prompt`."""
    now = frames.iso()
    return {
        "text": prompt,
        "hiddenText": prompt,
        "author": "bot",
        "createdAt": now,
        "timestamp": now,
        "messageId": str(uuid.uuid4()),
        "requestId": request_id,
        "messageType": "GenerateContentQuery",
        "contentType": "IMAGE",
        "offense": "None",
        "contentOrigin": "DeepLeo",
        "privacy": None,
    }


def plan_draw(ctx: TurnContext, directives: Directives) -> Turn:
    """A drawing turn: the short answer streamed (unless quiet), then the query, then the final item."""
    rid, msg_id = ctx.request_id, str(uuid.uuid4())
    query = content_query(image_prompt(ctx.prompt, directives), rid)
    quiet = directives.draw == "quiet"
    text = "" if quiet else DRAW_TEXT
    updates: list[Record | None] = [
        frames.message_update(frames.bot_message(msg_id, rid, step, []), rid, cursor=i == 0)
        for i, step in enumerate(prefixes(text, ctx.chunk) if text else [])
    ]
    updates.append(frames.message_update(query, rid))
    answer = [] if quiet else [frames.bot_message(msg_id, rid, text, [], final=True, message_type="Chat")]
    messages = [frames.user_echo(ctx.arg), *answer, query]
    return Turn(
        prelude=[frames.throttling_update(ctx.throttling, rid)],
        updates=updates,
        item=frames.success_item(ctx.meta, messages, ctx.throttling),
        answer_text=text,
    )
