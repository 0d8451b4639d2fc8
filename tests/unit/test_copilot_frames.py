"""Copilot's frames → events → answer events, on recorded frames (tests/fixtures/copilot_*.jsonl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversations.composer import ComposedPrompt, Limits, check_single_message, single_message
from messagers.copilot import (
    CopilotChallenge,
    CopilotIgnored,
    CopilotState,
    advance_copilot,
    finish_copilot,
    parse_copilot_frame,
    send_event,
    start_copilot_answer,
)
from messagers.events import (
    AnswerEvent,
    AnswerOptions,
    Citation,
    ContentDelta,
    Finished,
    ImageGenerated,
    ReasoningDelta,
    Source,
    Suggestions,
    UpstreamFailure,
)
from utils.errors import (
    ContextLengthExceeded,
    ConversationUnusable,
    StreamInterrupted,
    UpstreamBadResponse,
    UpstreamCaptcha,
)
from utils.hashcash import check_hashcash, parse_challenge, solve_hashcash

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def replay(name: str, options: AnswerOptions | None = None) -> tuple[CopilotState, list[AnswerEvent]]:
    """Feed every recorded message through the parser and the state machine, then finish."""
    state = start_copilot_answer(options or AnswerOptions())
    out: list[AnswerEvent] = []
    for line in (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        state, more = advance_copilot(state, parse_copilot_frame(line.encode()))
        out += more
    if state.done:
        state, more = finish_copilot(state)
        out += more
    return state, out


def content(events: list[AnswerEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


def test_append_text_is_incremental_and_citations_and_followups_are_kept() -> None:
    state, events = replay("copilot_chat")
    assert content(events) == "Paris is the capital of France."
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "stop"
    assert finished.sources == (
        Source("Paris - Wikipedia", "https://en.wikipedia.org/wiki/Paris"),
        Source("France", "https://example.org/france"),
    )
    assert finished.suggestions == ("How big is Paris?", "What about Lyon?")
    assert [e.source for e in events if isinstance(e, Citation)] == list(finished.sources)  # as they came
    assert [e.suggestions for e in events if isinstance(e, Suggestions)] == [finished.suggestions]
    assert state.over


def test_followups_finish_the_turn_without_waiting() -> None:
    state = start_copilot_answer(AnswerOptions())
    state, _ = advance_copilot(state, parse_copilot_frame(b'{"event":"appendText","text":"Hi"}'))
    state, out = advance_copilot(state, parse_copilot_frame(b'{"event":"done"}'))
    assert out == [] and state.done and not state.over
    state, out = advance_copilot(
        state, parse_copilot_frame(b'{"event":"suggestedFollowups","suggestions":["a"]}')
    )
    assert isinstance(out[-1], Finished) and out[-1].suggestions == ("a",) and state.over


def test_reasoning_is_never_content() -> None:
    _, events = replay("copilot_reasoning")
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "The user asks for 17 * 3. 17 * 3 = 51."
    assert content(events) == "17 × 3 = 51."
    assert isinstance(events[-1], Finished)


def test_replace_text_only_adds_what_was_not_sent() -> None:
    _, events = replay("copilot_replace")
    assert content(events) == "The answer is 42, truly."


def test_error_before_text_is_a_502_and_after_text_an_interruption() -> None:
    _, events = replay("copilot_error")
    assert isinstance(events[-1], UpstreamFailure)
    assert isinstance(events[-1].error, UpstreamBadResponse)
    assert "Something went wrong" in events[-1].error.message
    _, events = replay("copilot_error_mid")
    assert content(events) == "Half an answer"
    assert isinstance(events[-1], UpstreamFailure) and isinstance(events[-1].error, StreamInterrupted)
    assert "Lost the thread" in events[-1].error.message


def test_cloudflare_challenge_is_a_captcha() -> None:
    _, events = replay("copilot_cloudflare")
    assert isinstance(events[-1], UpstreamFailure) and isinstance(events[-1].error, UpstreamCaptcha)
    assert events[-1].error.status == 503 and "COPILOT_ACCESS_TOKEN" in events[-1].error.message


def test_hashcash_challenge_is_left_to_the_caller() -> None:
    lines = (FIXTURES / "copilot_hashcash.jsonl").read_text().splitlines()
    event = parse_copilot_frame(lines[-1])
    assert event == CopilotChallenge("hashcash", "9f2c41d0a7b3e615:3")
    state, out = advance_copilot(start_copilot_answer(AnswerOptions()), event)
    assert out == [] and not state.over


def test_generated_images_stream_and_are_listed_at_the_end() -> None:
    _, events = replay("copilot_image")
    images = [e.image for e in events if isinstance(e, ImageGenerated)]
    assert [i.url for i in images] == ["https://copilot.example/img/fox.png"]
    assert images[0].thumbnail_url and images[0].prompt == "a red fox"
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.images == tuple(images)
    assert content(events) == "Here is your fox."


def test_junk_and_unknown_events_are_ignored() -> None:
    kinds = [parse_copilot_frame(line) for line in (FIXTURES / "copilot_junk.jsonl").read_text().splitlines()]
    assert all(isinstance(k, CopilotIgnored) for k in kinds[:4])
    _, events = replay("copilot_junk")
    assert content(events) == "Still fine."


def test_done_without_any_answer_is_a_bad_response() -> None:
    state, _ = advance_copilot(start_copilot_answer(AnswerOptions()), parse_copilot_frame('{"event":"done"}'))
    _, out = finish_copilot(state)
    assert isinstance(out[-1], UpstreamFailure) and isinstance(out[-1].error, UpstreamBadResponse)


def test_inline_extras_are_appended_when_asked() -> None:
    _, events = replay("copilot_chat", AnswerOptions(frozenset({"sources", "suggestions"})))
    text = content(events)
    assert text.startswith("Paris is the capital of France.")
    assert "**Sources**\n1. [Paris - Wikipedia](https://en.wikipedia.org/wiki/Paris)" in text
    assert "- How big is Paris?" in text


def test_send_event_shape() -> None:
    assert send_event("cv", "reasoning", "hi") == {
        "event": "send",
        "conversationId": "cv",
        "mode": "reasoning",
        "content": [{"type": "text", "text": "hi"}],
    }


def test_first_message_carries_instructions_and_history_within_budget() -> None:
    prompt = ComposedPrompt("And now?", "[system](#additional_instructions)\nBe brief.")
    message = single_message(prompt)
    assert message.startswith("[system](#additional_instructions)\nBe brief.")
    assert message.endswith("[user](#message)\nAnd now?")
    assert single_message(ComposedPrompt("Hi", "")) == "Hi"
    limits = Limits(len(message), len(message), "COPILOT_MAX_PROMPT_CHARS", "Copilot")
    check_single_message(prompt, limits)
    with pytest.raises(ContextLengthExceeded, match="COPILOT_MAX_PROMPT_CHARS"):
        check_single_message(prompt, Limits(len(message) - 1, 0, "COPILOT_MAX_PROMPT_CHARS", "Copilot"))


def test_hashcash_is_solved_and_bounded() -> None:
    token = solve_hashcash("abc123:3", 5.0)
    assert token is not None and check_hashcash("abc123:3", token)
    assert not check_hashcash("abc123:3", "x")
    assert parse_challenge("no-difficulty") is None and solve_hashcash("nonsense", 1.0) is None
    assert solve_hashcash("abc:16", 0.05) is None  # far too hard for the budget: gives up in time


def test_a_gone_conversation_can_be_replaced() -> None:
    frame = b'{"event":"error","errorCode":"conversation-expired","message":"This conversation has expired."}'
    _, out = advance_copilot(start_copilot_answer(AnswerOptions()), parse_copilot_frame(frame))
    assert isinstance(out[-1], UpstreamFailure) and isinstance(out[-1].error, ConversationUnusable)
