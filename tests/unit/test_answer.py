"""The answer state machine on recorded frames: deltas, extras, retraction, failures."""

from __future__ import annotations

import pytest

from messagers.answer import clean_piece, clean_text, split_new_text
from messagers.events import ContentDelta, Finished, Throttling
from tests.unit.replay import replay
from utils.errors import (
    ConversationUnusable,
    StreamInterrupted,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamCaptcha,
    UpstreamClosed,
    UpstreamRateLimited,
)

EVEREST = "Mount Everest is the tallest mountain, at 8,849 m. It lies in the Himalayas."


def test_search_answer_streams_clean_content_and_structured_extras() -> None:
    result = replay("search_answer")
    assert result.content == EVEREST
    assert result.failure is None
    assert result.finished is not None and result.finished.reason == "stop"
    assert [s.url for s in result.finished.sources] == [
        "https://example.com/everest",
        "https://example.com/height",
    ]
    assert result.finished.suggestions[0] == "How long does it take to climb Everest?"
    assert result.finished.queries == ("tallest mountain",)


def test_deltas_never_carry_a_cut_citation_marker() -> None:
    deltas = [e.text for e in replay("search_answer").events if isinstance(e, ContentDelta)]
    assert all("[" not in d and "^" not in d for d in deltas)
    assert len(deltas) >= 4  # streamed in pieces, not in one lump


def test_inline_extras_render_search_sources_and_suggestions_as_markdown() -> None:
    result = replay("search_answer", frozenset({"search", "sources", "suggestions"}))
    assert result.content.startswith("> Searching the web for: tallest mountain\n\n")
    assert "tallest mountain[1], at 8,849 m[2]." in result.content
    assert "**Sources**\n1. [Everest - Example](https://example.com/everest)" in result.content
    assert "- What is the second tallest mountain?" in result.content


def test_offline_answer_survives_empty_unknown_and_packed_records() -> None:
    result = replay("offline_answer")
    assert result.content == "Hello! This is an offline answer with no search."
    assert result.finished == Finished("stop", throttling=Throttling(used=1, limit=30))


def test_retraction_keeps_what_was_sent_and_finishes_as_content_filter() -> None:
    result = replay("retracted")
    assert result.content == "Here is how to pick a lock: first"
    assert result.finished is not None and result.finished.reason == "content_filter"


def test_apology_with_nothing_sent_shows_the_apology() -> None:
    result = replay("apology_only")
    assert result.content.startswith("Sorry! That’s on me")
    assert result.finished is not None and result.finished.reason == "content_filter"


def test_disengaged_finishes_as_content_filter() -> None:
    result = replay("disengaged")
    assert result.content == "I'd rather not"
    assert result.finished is not None and result.finished.reason == "content_filter"


def test_restart_in_a_new_message_is_appended_once() -> None:
    result = replay("restart")
    assert result.content == "Let me check that for you.\n\nThe answer is 42, as everyone knows."


def test_shrinking_text_is_not_repeated() -> None:
    assert replay("shrink").content == "One two three four five six."


@pytest.mark.parametrize(
    ("recording", "error", "status"),
    [
        ("throttled", UpstreamRateLimited, 429),
        ("captcha", UpstreamCaptcha, 503),
        ("unauthorized", UpstreamAuthFailed, 502),
        ("invalid_session", ConversationUnusable, 502),
        ("turn_limit", ConversationUnusable, 502),
        ("close7_start", UpstreamClosed, 502),
    ],
)
def test_failures_before_any_text_map_to_their_status(recording: str, error: type, status: int) -> None:
    result = replay(recording)
    assert result.content == "" and result.finished is None
    assert result.failure is not None
    assert type(result.failure.error) is error
    assert result.failure.error.status == status


def test_throttled_carries_retry_after_and_no_retry() -> None:
    failure = replay("throttled").failure
    assert failure is not None
    assert failure.error.headers == {"Retry-After": "3600", "x-should-retry": "false"}


def test_captcha_message_tells_the_operator_what_to_do() -> None:
    failure = replay("captcha").failure
    assert failure is not None and "captcha" in failure.error.message.lower()
    assert failure.error.envelope()["error"]["code"] == "upstream_captcha_required"


@pytest.mark.parametrize("recording", ["close7", "no_final"])
def test_failures_after_text_are_interruptions(recording: str) -> None:
    result = replay(recording)
    assert result.content and result.finished is None
    assert result.failure is not None
    assert isinstance(result.failure.error, StreamInterrupted)
    assert result.failure.error.envelope()["error"]["code"] == "upstream_stream_interrupted"


def test_final_without_answer_is_a_bad_response() -> None:
    from messagers.answer import advance, start_answer
    from messagers.events import AnswerOptions, Final, UpstreamFailure

    _, out = advance(start_answer(AnswerOptions()), Final("Success", ""))
    assert len(out) == 1 and isinstance(out[0], UpstreamFailure)
    assert type(out[0].error) is UpstreamBadResponse


@pytest.mark.parametrize(
    ("consumed", "text", "same", "expected"),
    [
        ("", "Hello", True, ("", "Hello", "")),
        ("Hello", "Hello world", True, ("Hello", " world", "")),
        ("Hello world", "Hello", True, None),
        ("Hello world", "Hallo world!", True, ("Hallo world", "!", "")),
        ("Hello world", "Goodbye, cruel world", False, ("", "Goodbye, cruel world", "\n\n")),
    ],
)
def test_split_new_text(
    consumed: str, text: str, same: bool, expected: tuple[str, str, str] | None
) -> None:
    assert split_new_text(consumed, text, same_message=same) == expected


def test_clean_piece_holds_back_a_cut_marker() -> None:
    assert clean_piece("tall[^1^] peak[^", keep_markers=False, final=False) == ("tall peak", 14)
    assert clean_piece("plain", keep_markers=False, final=False) == ("plain", 5)


@pytest.mark.parametrize(
    ("text", "keep", "final", "expected"),
    [
        ("a[^1^] b", False, False, "a b"),
        ("a[^1^] b", True, False, "a[1] b"),
        ("tall[^", False, False, "tall"),
        ("tall[^12", False, False, "tall"),
        ("tall[^12^", False, False, "tall"),
        ("see [link", False, False, "see [link"),
        ("ends with [", False, True, "ends with ["),
    ],
)
def test_clean_text(text: str, keep: bool, final: bool, expected: str) -> None:
    assert clean_text(text, keep_markers=keep, final=final) == expected


def test_adjacent_deltas_merge_into_one_write() -> None:
    from messagers.answer import merge_deltas

    finished = Finished("stop")
    merged = merge_deltas([ContentDelta("a"), ContentDelta("b"), finished, ContentDelta("c")])
    assert merged == [ContentDelta("ab"), finished, ContentDelta("c")]
    assert merge_deltas([]) == []
