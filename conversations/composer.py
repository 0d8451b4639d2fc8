"""OpenAI messages -> Bing's prompt and its WebPage context (PROTOCOL.md §3.6), within a budget."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from utils.errors import ContextLengthExceeded, InvalidImage, InvalidRequest

_INSTRUCTION_ROLES = {"system", "developer"}
_PROMPT_ROLES = {"user", "tool", "function"}
_EXTRAS_BLOCK = re.compile(r"\n\n---\n\*\*(?:Sources|Suggested follow-ups)\*\*\n[\s\S]*$")
_SEARCH_LINES = re.compile(r"\A(?:> Searching the web for: [^\n]*\n\n)+")
IMAGE_PARTS = frozenset({"image_url", "input_image"})
IMAGE_MARK = "[image]"  # an earlier message's picture, as text: Bing sees one image, the prompt's
IMAGE_ONLY_PROMPT = "Describe this image."


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt_chars: int
    max_context_chars: int
    prompt_setting: str = "MAX_PROMPT_CHARS"  # named in the 400, so the operator knows what to raise
    service: str = "Bing"


@dataclass(frozen=True, slots=True)
class ImageAttachment:
    """The prompt's picture: where it comes from (a `data:` or http(s) URL), then the bytes to upload."""

    source: str = field(repr=False)
    param: str  # where it is in the request, for errors
    data: bytes = field(default=b"", repr=False)  # filled by conversations/vision.py before the turn


@dataclass(frozen=True, slots=True)
class ComposedPrompt:
    """What Bing gets: the prompt (`message.text`) and the context (`previousMessages`), maybe empty,
    and the prompt's image, if it has one (uploaded per turn, PROTOCOL.md §6.2)."""

    text: str
    context: str
    image: ImageAttachment | None = None

    @property
    def size(self) -> int:
        """Characters sent to Bing in all."""
        return len(self.text) + len(self.context)


def compose_prompt(messages: Sequence[Mapping[str, Any]], limits: Limits) -> ComposedPrompt:
    """The last user (or tool) message is the prompt; instructions and earlier turns the context.

    Raises InvalidRequest when there is no prompt, ContextLengthExceeded when the prompt is over budget
    (the context budget is checked by `check_context`, when a fresh conversation needs it).
    """
    if not messages or messages[-1].get("role") not in _PROMPT_ROLES:
        raise InvalidRequest("The last message must come from the user (or a tool).", param="messages")
    last = len(messages) - 1
    image = prompt_image(messages[-1], last)
    text = message_text(messages[-1], last, image_mark="").strip()
    if not text and image is not None:
        text = IMAGE_ONLY_PROMPT  # Bing wants words with a picture
    if not text:
        raise InvalidRequest("The last message has no text.", param="messages")
    check_prompt(text, limits)
    return ComposedPrompt(text, render_context(messages[:-1]), image)


def prompt_image(message: Mapping[str, Any], index: int) -> ImageAttachment | None:
    """The one image part of the prompt message, if any; several get 400 `invalid_image`."""
    content = message.get("content")
    if not isinstance(content, list):
        return None
    found = [(j, p) for j, p in enumerate(content) if isinstance(p, Mapping) and p.get("type") in IMAGE_PARTS]
    if not found:
        return None
    param = f"messages[{index}].content"
    if len(found) > 1:
        raise InvalidImage(f"Bing takes one image per message; this one has {len(found)}.", param=param)
    position, part = found[0]
    source = image_part_url(part)
    if not source:
        raise InvalidImage("The image part has no `image_url.url`.", param=f"{param}[{position}].image_url")
    return ImageAttachment(source, f"{param}[{position}].image_url")


def image_part_url(part: Mapping[str, Any]) -> str:
    """The URL of an `image_url` part (`{"url": ...}` or a bare string, as `input_image` has it)."""
    value = part.get("image_url")
    if isinstance(value, Mapping):
        value = value.get("url")
    return value.strip() if isinstance(value, str) else ""


def render_context(history: Sequence[Mapping[str, Any]]) -> str:
    """Instructions first (system and developer, in order), then the conversation so far."""
    instructions = [message_text(m, i) for i, m in enumerate(history) if m.get("role") in _INSTRUCTION_ROLES]
    blocks = [f"[system](#additional_instructions)\n{t}" for t in instructions if t.strip()]
    for index, message in enumerate(history):
        role = message.get("role")
        if role in _INSTRUCTION_ROLES:
            continue
        body = history_text(message, index)
        if body.strip():
            blocks.append(f"[{'assistant' if role == 'assistant' else role}](#message)\n{body}")
    return "\n\n".join(blocks)


def history_text(message: Mapping[str, Any], index: int) -> str:
    """An earlier turn as text: our inline extras stripped, tool calls spelled out."""
    text = message_text(message, index)
    if message.get("role") != "assistant":
        return text
    text = _SEARCH_LINES.sub("", _EXTRAS_BLOCK.sub("", text))
    calls = [
        describe_tool_call(call) for call in message.get("tool_calls") or [] if isinstance(call, Mapping)
    ]
    return "\n".join([text, *calls]).strip()


def describe_tool_call(call: Mapping[str, Any]) -> str:
    """One assistant tool call rendered for the transcript."""
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    return f"(called tool `{function.get('name', '?')}` with arguments {function.get('arguments', '{}')})"


def message_text(message: Mapping[str, Any], index: int, *, image_mark: str = IMAGE_MARK) -> str:
    """The text of `content`: a string, null, or a list of parts; images become `image_mark`,
    audio and files are refused."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        return json.dumps(content, ensure_ascii=False)
    return "\n".join(part_text(part, index, image_mark) for part in content)


def part_text(part: Any, index: int, image_mark: str = IMAGE_MARK) -> str:
    """One content part's text (an image's is `image_mark`); audio and files are not supported."""
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in ("text", "input_text", "refusal"):
        return str(part.get("text") or part.get("refusal") or "")
    if kind in IMAGE_PARTS:
        return image_mark
    raise InvalidRequest(
        f"Content parts of type `{kind}` are not supported: send text only.",
        param=f"messages[{index}].content",
        code="unsupported_content",
    )


def check_prompt(text: str, limits: Limits) -> None:
    """Refuse (never cut) a prompt over its character budget."""
    if len(text) > limits.max_prompt_chars:
        raise ContextLengthExceeded(
            f"The last message has {len(text)} characters; {limits.service} takes at most "
            f"{limits.max_prompt_chars} ({limits.prompt_setting}).",
            param="messages",
        )


def check_context(prompt: ComposedPrompt, limits: Limits) -> None:
    """Refuse (never cut) instructions plus history over budget; only a fresh conversation sends them."""
    if len(prompt.context) > limits.max_context_chars:
        raise ContextLengthExceeded(
            f"The instructions and earlier messages come to {len(prompt.context)} characters; the budget "
            f"is {limits.max_context_chars} (MAX_CONTEXT_CHARS). Shorten the conversation.",
            param="messages",
        )


def single_message(prompt: ComposedPrompt) -> str:
    """Instructions, earlier turns and the prompt as one message, for an upstream with no system
    or context slot (Copilot): the first message of a fresh conversation carries everything."""
    if not prompt.context:
        return prompt.text
    return f"{prompt.context}\n\n[user](#message)\n{prompt.text}"


def check_single_message(prompt: ComposedPrompt, limits: Limits) -> None:
    """Refuse (never cut) a first message (instructions, history and prompt) over budget."""
    size = len(single_message(prompt))
    if size > limits.max_prompt_chars:
        raise ContextLengthExceeded(
            f"The instructions, earlier messages and the last message come to {size} characters; "
            f"{limits.service}'s first message may take at most {limits.max_prompt_chars} "
            f"({limits.prompt_setting}). Shorten the conversation.",
            param="messages",
        )
