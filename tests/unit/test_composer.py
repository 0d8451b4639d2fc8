"""OpenAI messages -> Bing prompt and context, within budget."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.composer import Limits, check_context, compose_prompt
from utils.errors import ContextLengthExceeded, InvalidRequest

LIMITS = Limits(max_prompt_chars=100, max_context_chars=300)


def compose(*messages: dict[str, Any], limits: Limits = LIMITS) -> tuple[str, str]:
    prompt = compose_prompt(list(messages), limits)
    return prompt.text, prompt.context


def test_single_user_message_has_no_context() -> None:
    assert compose({"role": "user", "content": "Hi"}) == ("Hi", "")


def test_system_prompt_reaches_bing_without_an_earlier_assistant_turn() -> None:
    text, context = compose({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"})
    assert text == "Hi"
    assert context == "[system](#additional_instructions)\nBe terse."


def test_developer_counts_as_system_and_instructions_come_first() -> None:
    _, context = compose(
        {"role": "user", "content": "first"},
        {"role": "developer", "content": "Speak French."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    )
    assert context == (
        "[system](#additional_instructions)\nSpeak French.\n\n"
        "[user](#message)\nfirst\n\n[assistant](#message)\nok"
    )


def test_content_parts_and_null_content_are_accepted() -> None:
    text, context = compose(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": [{"type": "text", "text": "42"}], "tool_call_id": "c1"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    )
    assert text == "a\nb"
    assert "(called tool `f` with arguments {})" in context
    assert "[tool](#message)\n42" in context


def test_inline_extras_are_stripped_from_assistant_history() -> None:
    answer = (
        "> Searching the web for: x\n\nThe answer.\n\n---\n**Sources**\n1. [a](https://a)"
        "\n\n---\n**Suggested follow-ups**\n- more?"
    )
    _, context = compose({"role": "assistant", "content": answer}, {"role": "user", "content": "ok"})
    assert context == "[assistant](#message)\nThe answer."


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "only instructions"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "prefill"}],
        [{"role": "user", "content": "   "}],
    ],
)
def test_no_prompt_is_a_400(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compose_prompt(messages, LIMITS)
    assert caught.value.status == 400 and caught.value.param == "messages"


def image_part(url: str = "data:image/png;base64,AAAA") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}


def test_the_prompts_image_is_attached_and_earlier_ones_become_a_mark() -> None:
    prompt = compose_prompt(
        [
            {"role": "user", "content": [{"type": "text", "text": "Old"}, image_part("https://a/1.png")]},
            {"role": "assistant", "content": "Seen."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_part()]},
        ],
        LIMITS,
    )
    assert prompt.text == "What is this?"
    assert prompt.image is not None and prompt.image.source == "data:image/png;base64,AAAA"
    assert prompt.image.param == "messages[2].content[1].image_url"
    assert "[user](#message)\nOld\n[image]" in prompt.context


def test_an_image_without_words_gets_a_default_prompt() -> None:
    prompt = compose_prompt([{"role": "user", "content": [image_part()]}], LIMITS)
    assert prompt.text == "Describe this image." and prompt.image is not None


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([image_part(), image_part()], "one image per message"),
        ([{"type": "image_url", "image_url": {}}], "no `image_url.url`"),
    ],
)
def test_unusable_image_parts_are_invalid_image(parts: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compose({"role": "user", "content": parts})
    assert caught.value.code == "invalid_image" and message in caught.value.message


def test_audio_and_files_are_still_refused_clearly() -> None:
    with pytest.raises(InvalidRequest) as caught:
        compose({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": ""}}]})
    assert caught.value.code == "unsupported_content"
    assert caught.value.param == "messages[0].content"


def test_budgets_refuse_instead_of_cutting() -> None:
    with pytest.raises(ContextLengthExceeded) as caught:
        compose({"role": "user", "content": "x" * 101})
    assert caught.value.code == "context_length_exceeded" and "101" in caught.value.message
    long_history = compose_prompt(
        [{"role": "system", "content": "y" * 301}, {"role": "user", "content": "q"}], LIMITS
    )
    with pytest.raises(ContextLengthExceeded):
        check_context(long_history, LIMITS)
    assert compose({"role": "user", "content": "x" * 100})[0] == "x" * 100
