"""Images through the official client: vision input (kblob), drawing in chat, /v1/images/generations."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import eventually
from tests.servers import ServerThread, service_settings


def picture(width: int, height: int, kind: str = "PNG", color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, kind)
    return out.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def with_image(url: str, text: str = "What is in this picture?") -> list[Any]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


def ask(
    client: OpenAI, messages: list[Any], *, stream: bool = False, model: str = "creative"
) -> tuple[str, str | None]:
    """(content, finish_reason) of one answer, streamed or not."""
    if not stream:
        result = client.chat.completions.create(model=model, messages=messages)
        return result.choices[0].message.content or "", result.choices[0].finish_reason
    parts, reason = [], None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            reason = chunk.choices[0].finish_reason or reason
    return "".join(parts), reason


# --- Vision input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_data_url_image_reaches_bing_as_an_uploaded_blob(
    client: OpenAI, emulator: BingEmulator, stream: bool
) -> None:
    content, reason = ask(client, with_image(data_url(picture(40, 30))), stream=stream)
    upload = emulator.uploads[-1]
    assert (upload.width, upload.height, upload.format) == (40, 30, "PNG")
    message = emulator.chat_requests[-1]["message"]
    assert message["imageUrl"] == f"{emulator.web_url}/images/blob?bcid={upload.blob_id}_fb"
    assert message["originalImageUrl"] == f"{emulator.web_url}/images/blob?bcid={upload.blob_id}"
    assert message["text"] == "What is in this picture?"
    assert upload.conversation_id == emulator.chat_requests[-1]["conversationId"]
    assert upload.tone == "Creative"
    assert "You showed me a 40x30 PNG picture." in content and reason == "stop"


def test_an_https_image_url_is_fetched_by_the_service(client: OpenAI, emulator: BingEmulator) -> None:
    url = f"{emulator.web_url}/_emulator/picture?w=50&h=20&type=jpeg"
    content, _ = ask(client, with_image(url), stream=True)
    assert "You showed me a 50x20 JPEG picture." in content
    assert emulator.uploads[-1].format == "JPEG"


def test_large_and_unusual_images_are_downscaled_or_reencoded(client: OpenAI, emulator: BingEmulator) -> None:
    ask(client, with_image(data_url(picture(2000, 1500))))
    upload = emulator.uploads[-1]
    assert upload.format == "JPEG" and upload.width * upload.height <= 1_000_000
    assert abs(upload.width / upload.height - 2000 / 1500) < 0.01
    ask(client, with_image(data_url(picture(30, 30, "WEBP"), "image/webp")))
    assert (emulator.uploads[-1].format, emulator.uploads[-1].width) == ("JPEG", 30)


def test_an_image_without_text_and_an_earlier_image(client: OpenAI, emulator: BingEmulator) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(picture(8, 8))}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Earlier"}, image]},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": [image]},
    ]
    content, _ = ask(client, messages)
    assert emulator.chat_requests[-1]["message"]["text"] == "Describe this image."
    assert "[image]" in emulator.chat_requests[-1]["previousMessages"][0]["description"]
    assert "8x8 PNG" in content


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (data_url(b"hello, not a picture"), "not a picture"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png;base64,***", "does not decode"),
        ("ftp://example.com/x.png", "https URL or a `data:` URL"),
        ("{web}/_emulator/picture?type=text", "not an image"),
        ("{web}/_emulator/picture?type=gif", "HTTP 404"),
    ],
)
def test_unusable_images_are_a_clear_400(
    client: OpenAI, emulator: BingEmulator, url: str, words: str
) -> None:
    uploads = emulator.upload_count
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, with_image(url.format(web=emulator.web_url)))
    assert caught.value.code == "invalid_image" and words in caught.value.message
    assert caught.value.param == "messages[0].content[1].image_url"
    assert emulator.upload_count == uploads  # refused before anything reached Bing


def test_a_picture_goes_with_the_first_turn_on_a_warm_socket(emulator: BingEmulator) -> None:
    """The upload happens before the socket opened ahead is claimed: the pooled conversation, its
    socket and the uploaded blob all meet in one turn."""
    with ServerThread(service_settings(emulator, warm_pool_size=1)) as url, openai_client(url) as client:
        eventually(lambda: any(r.handshake_done and not r.chats and r.closed_at is None
                               for r in emulator.connections))
        warm = [r for r in emulator.connections
                if r.handshake_done and not r.chats and r.closed_at is None][-1]
        pooled = list(emulator.conversations)[-1]
        content, reason = ask(client, with_image(data_url(picture(40, 30))), stream=True)
        assert warm.chats == 1 and warm.completed  # the turn ran on the socket opened ahead
        assert emulator.chat_requests[-1]["conversationId"] == pooled == emulator.uploads[-1].conversation_id
        assert "You showed me a 40x30 PNG picture." in content and reason == "stop"


def test_bing_refusing_the_upload_is_a_400_and_a_broken_kblob_a_502(
    client: OpenAI, emulator: BingEmulator
) -> None:
    emulator.faults.upload = "upload_refused"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, with_image(data_url(picture(8, 8))), stream=True)
    assert refused.value.code == "invalid_image" and "refused" in refused.value.message
    emulator.faults.upload = "upload_http500"
    with pytest.raises(openai.InternalServerError) as broken:
        ask(client, with_image(data_url(picture(8, 8))))
    assert broken.value.status_code == 502 and broken.value.code == "upstream_bad_response"


@pytest.fixture(scope="module")
def strict_url(emulator: BingEmulator) -> Iterator[str]:
    settings = service_settings(emulator, max_image_bytes=2000, image_fetch_urls=False)
    with ServerThread(settings) as url:
        yield url


def test_size_cap_and_url_switch(strict_url: str, emulator: BingEmulator) -> None:
    with openai_client(strict_url) as client:
        with pytest.raises(openai.BadRequestError) as big:
            ask(client, with_image(data_url(picture(400, 400, "BMP"), "image/bmp")))
        assert big.value.code == "invalid_image" and "MAX_IMAGE_BYTES" in big.value.message
        with pytest.raises(openai.BadRequestError) as fetched:
            ask(client, with_image(f"{emulator.web_url}/_emulator/picture"))
        assert fetched.value.code == "invalid_image" and "IMAGE_FETCH_URLS" in fetched.value.message


# --- Drawing in chat --------------------------------------------------------------------------------

IMAGE_LINK = r"!\[a red fox in the snow\]\(http://127\.0\.0\.1:\d+/th/id/OIG\.[\w-]+\)"


@pytest.mark.parametrize("stream", [False, True])
def test_a_drawing_prompt_yields_markdown_images(
    client: OpenAI, emulator: BingEmulator, stream: bool
) -> None:
    content, reason = ask(client, [{"role": "user", "content": "Draw a red fox in the snow"}], stream=stream)
    creation = emulator.creations[-1]
    assert creation.prompt == "a red fox in the snow" and creation.polls >= 1
    text, _, images = content.partition("\n\n")
    assert text == "I'll try to create that."
    lines = images.split("\n")
    assert len(lines) == 4 and reason == "stop"
    for line, url in zip(lines, creation.urls, strict=True):
        assert line == f"![a red fox in the snow]({url})"
    picture_bytes = httpx.get(creation.urls[0]).content
    assert picture_bytes.startswith(b"\x89PNG")


def test_a_drawing_answer_without_text_is_only_images(client: OpenAI, emulator: BingEmulator) -> None:
    content, reason = ask(
        client, [{"role": "user", "content": "a quiet lake emulate:draw=quiet"}], stream=True
    )
    assert content.startswith("![a quiet lake](") and content.count("![") == 4 and reason == "stop"


def test_a_blocked_image_prompt_is_a_note_and_content_filter(client: OpenAI) -> None:
    for stream in (False, True):
        content, reason = ask(
            client, [{"role": "user", "content": "draw it emulate:image_blocked"}], stream=stream
        )
        assert content.startswith("I'll try to create that.\n\n_(Bing's Image Creator blocked")
        assert reason == "content_filter" and "![" not in content


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("no_coins", 429, "rate_limit_exceeded"),
        ("image_timeout", 504, "upstream_timeout"),
        ("image_placeholder", 502, "upstream_bad_response"),
        ("image_unavailable", 502, "upstream_bad_response"),
    ],
)
def test_image_failures_in_chat_are_errors_with_their_codes(
    client: OpenAI, fault: str, status: int, code: str
) -> None:
    messages = [{"role": "user", "content": f"draw a boat emulate:{fault}"}]
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, messages)
    assert caught.value.status_code == status and caught.value.code == code
    with pytest.raises(openai.APIError) as in_band:  # the text was streamed: the error comes in-band
        ask(client, messages, stream=True)
    assert in_band.value.code == code and "creating the image failed" in in_band.value.message


# --- POST /v1/images/generations ------------------------------------------------------------------


def test_images_generate_returns_urls(client: OpenAI, emulator: BingEmulator) -> None:
    result = client.images.generate(prompt="a lighthouse at dawn", n=2, size="1024x1024", model="dall-e-3")
    creation = emulator.creations[-1]
    assert creation.prompt == "a lighthouse at dawn"
    assert [item.url for item in result.data or []] == creation.urls[:2]
    assert result.created > 0


def test_images_generate_returns_base64(client: OpenAI, emulator: BingEmulator) -> None:
    result = client.images.generate(prompt="a lighthouse at night", response_format="b64_json")
    assert result.data is not None and len(result.data) == 1
    data = base64.b64decode(result.data[0].b64_json or "")
    token = emulator.creations[-1].urls[0].rsplit("/", 1)[-1]
    assert data == emulator.pictures[token] and data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size == (64, 64)


@pytest.mark.parametrize("prefix", ["", "/api", "/api/v1", "/v1/v1"])
def test_images_route_under_every_prefix(base_url: str, prefix: str) -> None:
    response = httpx.post(f"{base_url}{prefix}/images/generations", json={"prompt": "a cat"}, timeout=10)
    assert response.status_code == 200 and len(response.json()["data"]) == 1


@pytest.mark.parametrize(
    ("prompt", "status", "code"),
    [
        ("a cat emulate:image_blocked", 400, "content_policy_violation"),
        ("a cat emulate:image_reviewed", 400, "content_policy_violation"),
        ("a cat emulate:image_pending", 400, "content_policy_violation"),
        ("a cat emulate:image_language", 400, "unsupported_language"),
        ("a cat emulate:no_coins", 429, "rate_limit_exceeded"),
        ("a cat emulate:image_timeout", 504, "upstream_timeout"),
        ("a cat emulate:image_placeholder", 502, "upstream_bad_response"),
    ],
)
def test_images_generate_failures(client: OpenAI, prompt: str, status: int, code: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(prompt=prompt)
    assert caught.value.status_code == status and caught.value.code == code


def test_rt3_retry_and_invalid_requests(client: OpenAI, emulator: BingEmulator) -> None:
    assert len(client.images.generate(prompt="a dog emulate:image_rt3").data or []) == 1
    for kwargs, param in (({"prompt": "x", "n": 5}, "n"), ({"prompt": "  "}, "prompt")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(**kwargs)
        assert caught.value.param == param
    with pytest.raises(openai.BadRequestError) as bad_format:
        client.images.generate(prompt="x", response_format="png")  # type: ignore[arg-type]
    assert bad_format.value.code == "invalid_request"


@pytest.fixture
def two_accounts(emulator: BingEmulator, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "accounts.json"
    path.write_text(
        json.dumps(
            [
                {"name": "anonymous", "cookies": "MUID=abc"},
                {"name": "broke", "cookies": "_U=broke-cookie; emulate=no_coins"},
                {"name": "rich", "cookies": "_U=rich-cookie"},
            ]
        )
    )
    settings = service_settings(emulator, bing_cookies_file=str(path), failover_attempts=3, admin_key="adm")
    with ServerThread(settings) as url:
        yield url


def test_images_fail_over_past_accounts_without_coins(two_accounts: str, emulator: BingEmulator) -> None:
    with openai_client(two_accounts) as client:
        for _ in range(2):  # whichever account is picked first, the one with coins draws
            assert len(client.images.generate(prompt="a kite").data or []) == 1
    view = httpx.get(f"{two_accounts}/v1/accounts", headers={"Authorization": "Bearer adm"}).json()
    states = {entry["name"]: (entry["state"], entry["uses"]) for entry in view["data"]}
    assert states["broke"][0] == "healthy"  # no coins is no reason to bench an account for chat
    assert states["anonymous"][1] == 0  # anonymous accounts cannot draw and are never asked to


def test_no_signed_in_account_is_a_clear_error(emulator: BingEmulator) -> None:
    with (
        ServerThread(service_settings(emulator, bing_cookies="MUID=anonymous")) as url,
        openai_client(url) as client,
    ):
        with pytest.raises(openai.InternalServerError) as caught:
            client.images.generate(prompt="a kite")
        assert caught.value.code == "upstream_auth_failed" and "signed-in" in caught.value.message


def test_a_chat_continues_after_pictures_and_takes_a_picture_on_a_later_turn(
    client: OpenAI, emulator: BingEmulator
) -> None:
    first = [{"role": "user", "content": "Draw a red fox in the snow"}]
    drawn, _ = ask(client, first)
    continued = emulator.continued_chat_count
    follow_up = [*first, {"role": "assistant", "content": drawn}, *with_image(data_url(picture(16, 16)))]
    content, reason = ask(client, follow_up, stream=True)
    request = emulator.chat_requests[-1]
    assert emulator.continued_chat_count == continued + 1 and request["isStartOfSession"] is False
    assert emulator.uploads[-1].conversation_id == request["conversationId"]
    assert "16x16 PNG" in content and reason == "stop"
