"""Images on the Copilot upstream, through the official client: pictures in (its attachments),
pictures out (`imageGenerated`) in chat and for `images.generate` with a Copilot model."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.test_copilot import copilot_settings
from tests.e2e.test_images import ask, data_url, picture, with_image
from tests.servers import ServerThread


@pytest.fixture(scope="module")
def cp_url(emulator: BingEmulator) -> Iterator[str]:
    with ServerThread(copilot_settings(emulator)) as url:
        yield url


@pytest.fixture
def cp(cp_url: str) -> Iterator[OpenAI]:
    with openai_client(cp_url) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True])
def test_a_picture_reaches_copilot_as_an_attachment(cp: OpenAI, emulator: BingEmulator, stream: bool) -> None:
    content, reason = ask(cp, with_image(data_url(picture(20, 10))), stream=stream, model="copilot")
    sent = emulator.copilot_chat_requests[-1]["content"]
    assert sent[0]["type"] == "image" and sent[1] == {"type": "text", "text": "What is in this picture?"}
    upload = emulator.copilot_attachments[sent[0]["url"]]
    assert (upload.width, upload.height, upload.format) == (20, 10, "PNG")
    assert "You showed me a 20x10 PNG picture." in content and reason == "stop"


def test_an_https_picture_and_refusals_on_copilot(cp: OpenAI, emulator: BingEmulator) -> None:
    url = f"{emulator.web_url}/_emulator/picture?w=12&h=34&type=webp"
    content, _ = ask(cp, with_image(url), model="copilot")
    assert "You showed me a 12x34 JPEG picture." in content  # WEBP goes up re-encoded
    emulator.faults.upload = "upload_refused"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(cp, with_image(url), model="copilot")
    assert refused.value.code == "invalid_image" and "Copilot refused" in refused.value.message
    emulator.faults.upload = "upload_http500"
    with pytest.raises(openai.InternalServerError) as broken:
        ask(cp, with_image(url), model="copilot", stream=True)
    assert broken.value.code == "upstream_bad_response"


@pytest.mark.parametrize("stream", [False, True])
def test_copilot_pictures_become_markdown_images(cp: OpenAI, emulator: BingEmulator, stream: bool) -> None:
    content, reason = ask(cp, [{"role": "user", "content": "Draw a red fox"}], stream=stream, model="copilot")
    text, _, image = content.rpartition("\n\n")
    url = image.removeprefix("![a red fox](").removesuffix(")")
    assert text and image == f"![a red fox]({url})" and reason == "stop"
    assert httpx.get(url).content == emulator.pictures[url.rsplit("/", 1)[-1]]


def test_images_generate_with_a_copilot_model(cp: OpenAI, emulator: BingEmulator) -> None:
    turns = emulator.copilot_chat_count
    result = cp.images.generate(model="copilot", prompt="a windmill", n=2)
    urls = [item.url or "" for item in result.data or []]
    assert len(urls) == 2 and len(set(urls)) == 2 and emulator.copilot_chat_count == turns + 2
    assert emulator.copilot_chat_requests[-1]["content"][0]["text"] == "Create an image of: a windmill"
    encoded = cp.images.generate(model="copilot", prompt="a windmill", response_format="b64_json")
    data = base64.b64decode((encoded.data or [])[0].b64_json or "")
    assert data.startswith(b"\x89PNG")
    creations = len(emulator.creations)
    cp.images.generate(model="dall-e-3", prompt="a windmill")  # not a Copilot model: Bing draws
    assert len(emulator.creations) == creations + 1


def test_copilot_answering_without_a_picture_is_a_502(cp: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        cp.images.generate(model="copilot", prompt="x emulate:no_image")
    assert caught.value.code == "upstream_bad_response" and "without making a picture" in caught.value.message
