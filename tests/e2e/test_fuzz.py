"""Property-based fuzzing of POST /v1/chat/completions on the real server (backed by the emulator).

Whatever the body, the answer is never a 5xx for a malformed request, and every error is the OpenAI
envelope with its four keys (never FastAPI's `detail`). A body that happens to be valid reaches the
emulator and is answered, which is fine too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apis.errors import INTERNAL_MESSAGE
from emulator import BingEmulator

# Hypothesis imports libcst to suggest a patch when a test fails; libcst's import warns, and with
# `filterwarnings = error` that would turn a readable failure into an INTERNALERROR. Import it quietly.
with suppress(ImportError), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: a red build is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]


def no_directives(text: str) -> str:
    """Keep generated text from steering the emulator (`emulate:` tokens)."""
    return text.replace("emulate:", "emulate ")


texts = st.text(max_size=40).map(no_directives)
huge = st.integers(min_value=4_000, max_value=2_100_000).map(lambda n: "x" * n)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


class Raw:
    """JSON text spliced in as is: deep nesting, which Python's own printers cannot recurse into."""

    def __init__(self, text: str, label: str) -> None:
        self.text, self.label = text, label

    def __repr__(self) -> str:
        return f"Raw({self.label})"


def nested(depth: int) -> Raw:
    return Raw('{"a": [' * depth + '"x"' + "]}" * depth, f"depth={depth}")


deep = st.integers(min_value=1, max_value=5000).map(nested)
oddities = st.sampled_from([float("inf"), -0.0, 2**64, "\x00", "\ud800", "\u202e", "🙂" * 1000])
anything = st.one_of(json_values, huge, deep, oddities)

part_kinds = st.sampled_from(["text", "text", "image_url", "input_audio", "file", ""])
parts = st.one_of(texts, st.builds(lambda kind, text: {"type": kind, "text": text}, part_kinds, texts))
contents = st.one_of(texts.map(lambda t: t or "hi"), st.none(), st.lists(parts, max_size=3))
valid_message = st.builds(
    lambda role, content: {"role": role, "content": content}, st.sampled_from(ROLES), contents
)
OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.builds(lambda usage: {"include_usage": usage}, st.booleans()),
    "n": st.sampled_from([1, 2, 0, -1]),
    "stop": st.one_of(texts, st.lists(texts, max_size=4)),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function"}]),
    "tools": st.lists(st.dictionaries(texts, json_values, max_size=2), max_size=2),
    "modalities": st.lists(st.sampled_from(["text", "audio"]), max_size=2),
    "user": st.one_of(texts, json_values),
    "inline_extras": st.lists(st.sampled_from(["search", "sources", "suggestions", "bogus"]), max_size=3),
    "temperature": json_values,
}
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "x-extra"]


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request (model, messages ending with a user turn, some options), then 0-3 mutations."""
    earlier = draw(st.lists(valid_message, max_size=3))
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["balanced", "precise-offline", "gpt-4", "nope", ""])),
        "messages": [*earlier, {"role": "user", "content": draw(texts) or "hi"}],
    }
    for name, strategy in OPTIONAL.items():
        if draw(st.integers(0, 3)) == 0:
            body[name] = draw(strategy)
    for _ in range(draw(st.integers(0, 3))):
        target = body
        if body.get("messages") and isinstance(body["messages"], list) and draw(st.booleans()):
            index = draw(st.integers(0, len(body["messages"]) - 1))
            if not isinstance(body["messages"][index], dict):
                continue
            target, names = body["messages"][index], MESSAGE_FIELDS
        else:
            names = ["model", "messages", *OPTIONAL, "x-extra"]
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0:
            target.pop(name, None)
        else:
            target[name] = draw(anything)
    return body


raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{", b"[", b"null", b'{"messages": [}', b"\xef\xbb\xbf{}", b'{"a": 1e999999}']),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ]
)


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def check(response: httpx.Response) -> None:
    """No 5xx, every error an envelope, and no bug reported in-band in a stream either."""
    assert INTERNAL_MESSAGE not in response.text, response.text[-500:]
    if response.status_code < 400:
        return
    assert response.status_code < 500, response.text[:500]
    body = response.json()
    assert "detail" not in body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def post(http: httpx.Client, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Authorization": "Bearer sk-fuzz"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http.post("/v1/chat/completions", content=content, headers=headers)


def encode(value: Any) -> bytes:
    return to_json(value).encode("utf-8", "surrogatepass")


def to_json(value: Any) -> str:
    """json.dumps, except that `Raw` parts go in verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}: {to_json(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


@settings(FUZZ, max_examples=120)
@given(body=anything)
def test_arbitrary_json_is_never_a_server_error(http: httpx.Client, body: Any) -> None:
    check(post(http, encode(body), "application/json"))


@settings(FUZZ, max_examples=200)
@given(body=chat_requests())
def test_near_miss_chat_requests_are_never_a_server_error(http: httpx.Client, body: dict[str, Any]) -> None:
    check(post(http, encode(body), "application/json"))


@settings(FUZZ, max_examples=80)
@given(content=raw_bytes, content_type=content_types)
def test_garbage_bytes_are_never_a_server_error(
    http: httpx.Client, content: bytes, content_type: str | None
) -> None:
    check(post(http, content, content_type))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "messages",
    [
        # Found by the fuzzer: 300 levels parse, then hashing the history failed (a 500, or in-band).
        [{"role": "user", "content": "a", "tool_calls": [nested(300)]}, {"role": "user", "content": "hi"}],
        # Found by the fuzzer: half a UTF-16 pair parses, then neither Bing's frame nor an error could
        # carry it.
        [{"role": "user", "content": "hi \ud800"}],
        [{"role": "assistant", "content": "\udfff"}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": [{"type": "\ud800"}]}],
    ],
    ids=["deep-tool-calls", "surrogate-prompt", "surrogate-history", "surrogate-part-type"],
)
def test_json_that_parses_but_cannot_be_used_is_a_400(
    http: httpx.Client, messages: list[dict[str, Any]], stream: bool
) -> None:
    body = {"model": "balanced", "stream": stream, "messages": messages}
    for encoded in (encode(body), to_json(body).encode("ascii", "backslashreplace")):
        response = post(http, encoded, "application/json")
        check(response)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


def test_surrogate_in_the_model_name_is_a_400(http: httpx.Client) -> None:
    response = post(http, b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', None)
    check(response)
    assert response.status_code == 400


def test_escaped_surrogate_pairs_are_fine(http: httpx.Client, emulator: BingEmulator) -> None:
    body = b'{"model": "balanced", "messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}]}'
    response = post(http, body, "application/json")
    assert response.status_code == 200
    assert "hi \U0001f600" in json.dumps(emulator.chat_requests[-1], ensure_ascii=False)
