"""The emulator's image endpoints and drawing turns, spoken to directly (PROTOCOL.md §6)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from emulator import BingEmulator, EmulatorThread
from tests.integration.test_emulator import ask, chat_arg, flat, new_session, open_ws, read_turn, send_chat

SIGNED_IN = {"Cookie": "_U=abc; MUID=1"}


@pytest.fixture(scope="module")
def emu() -> Iterator[BingEmulator]:
    """One emulator for the module, quick to finish its pictures."""
    with EmulatorThread(ping_interval=0.1, close_wait=1.0, image_ready_seconds=0.1) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: BingEmulator) -> Iterator[None]:
    emu.clear_faults()
    yield
    emu.clear_faults()


def png(width: int = 12, height: int = 9) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(out, "PNG")
    return out.getvalue()


def upload(emu: BingEmulator, data: bytes, cookie: str = "_U=abc") -> httpx.Response:
    knowledge = {"imageInfo": {}, "knowledgeRequest": {"invokedSkills": ["ImageById"],
                 "convoData": {"convoid": "c1", "convotone": "Precise"}}}
    fields = {"knowledgeRequest": (None, json.dumps(knowledge)),
              "imageBase64": (None, base64.b64encode(data).decode())}
    return httpx.post(f"{emu.web_url}/images/kblob", files=fields, headers={"Cookie": cookie})


def test_kblob_stores_pictures_and_refuses_the_rest(emu: BingEmulator) -> None:
    stored = upload(emu, png()).json()
    assert stored["blobId"] and stored["processedBlobId"] == stored["blobId"] + "_fb"
    record = emu.blobs[stored["blobId"]]
    assert (record.width, record.height, record.conversation_id, record.tone) == (12, 9, "c1", "Precise")
    assert httpx.get(f"{emu.web_url}/images/blob?bcid={stored['blobId']}").content == png()
    assert upload(emu, b"not a picture").json() == {"blobId": "", "processedBlobId": ""}
    assert upload(emu, png(), cookie="_U=abc; emulate=upload_refused").json()["blobId"] == ""
    emu.faults.upload = "upload_http500"
    assert upload(emu, png()).status_code == 500


def create(
    emu: BingEmulator, prompt: str, cookie: dict[str, str] = SIGNED_IN, rt: str = "4"
) -> httpx.Response:
    return httpx.post(f"{emu.web_url}/images/create?q={prompt}&rt={rt}&FORM=GENCRE",
                      data={"q": prompt, "qs": "ds"}, headers=cookie)


def test_image_creator_redirects_polls_and_serves_pictures(emu: BingEmulator) -> None:
    started = create(emu, "a cat")
    assert started.status_code == 302 and started.headers["location"].endswith("&nfy=1")
    request_id = started.headers["location"].split("&id=")[1].split("&")[0]
    results = f"{emu.web_url}/images/create/async/results/{request_id}?q=a+cat"
    page = ""
    for _ in range(100):
        page = httpx.get(results).text
        if page:
            break
        time.sleep(0.02)
    assert page.count('class="mimg"') == 4 and emu.creations[-1].polls >= 2
    src = page.split('class="mimg" src="')[1].split("?w=")[0]
    assert httpx.get(src).content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("prompt", "cookie", "words"),
    [
        ("a cat emulate:image_blocked", SIGNED_IN, "This prompt has been blocked"),
        ("a cat", {"Cookie": "_U=abc; emulate=no_coins"}, "0 coins available"),
        ("a cat emulate:image_rt3", SIGNED_IN, "Image Creator"),
    ],
)
def test_image_creator_refusals_are_pages(emu: BingEmulator, prompt: str, cookie: dict[str, str],
                                          words: str) -> None:
    answer = create(emu, prompt, cookie)
    assert answer.status_code == 200 and words in answer.text


def test_anonymous_accounts_are_sent_to_sign_in_and_rt3_redirects(emu: BingEmulator) -> None:
    anonymous = create(emu, "a cat", {"Cookie": "MUID=1"})
    assert anonymous.status_code == 302 and "id=" not in anonymous.headers["location"]
    assert create(emu, "a dog emulate:image_rt3", rt="3").status_code == 302


def test_a_drawing_prompt_gets_a_generate_content_query(emu: BingEmulator) -> None:
    session = new_session(emu)
    arg = chat_arg(session, "Draw a blue whale emulate:image_placeholder")
    arg["optionsSets"].append("gencontentv3")
    with open_ws(emu, session.token) as ws:
        send_chat(ws, arg)
        records = flat(read_turn(ws))
    final = next(r for r in records if r.get("type") == 2)["item"]
    query = final["messages"][-1]
    assert (query["messageType"], query["contentType"]) == ("GenerateContentQuery", "IMAGE")
    assert query["text"] == "a blue whale emulate:image_placeholder"
    assert final["messages"][-2]["text"] == "I'll try to create that."
    plain = flat(ask(emu, "Draw a blue whale"))  # without gencontentv3 (Balanced) Bing just talks
    item = next(r for r in plain if r.get("type") == 2)["item"]
    assert all(m.get("messageType") != "GenerateContentQuery" for m in item["messages"])


def image_turn(emu: BingEmulator, image_url: Any) -> dict[str, Any]:
    session = new_session(emu)
    arg = chat_arg(session, "What is this?", search=False)
    arg["message"]["imageUrl"] = image_url
    with open_ws(emu, session.token) as ws:
        send_chat(ws, arg)
        return next(r for r in flat(read_turn(ws)) if r.get("type") == 2)["item"]


def test_chathub_checks_that_an_image_was_uploaded(emu: BingEmulator) -> None:
    blob = upload(emu, png(30, 20)).json()["blobId"]
    item = image_turn(emu, f"{emu.web_url}/images/blob?bcid={blob}")
    assert item["result"]["value"] == "Success"
    assert "You showed me a 30x20 PNG picture." in item["messages"][-1]["text"]
    refused = image_turn(emu, f"{emu.web_url}/images/blob?bcid=never-uploaded")
    assert refused["result"]["value"] == "InvalidRequest" and "messages" not in refused
