"""Pure image translators: Image Creator pages, kblob answers, GenerateContentQuery, and the
picture preparation before an upload."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from conversations.vision import data_url_bytes, upload_ready
from messagers.answer import advance, start_answer
from messagers.events import (
    AnswerOptions,
    ContentDelta,
    Final,
    Finished,
    ImageRequested,
    UpstreamFailure,
    Waiting,
)
from messagers.frames import parse_final
from messagers.images import (
    BlobIds,
    Refusal,
    blob_image_url,
    create_request_id,
    find_refusal,
    image_markdown,
    is_placeholder,
    kblob_ids,
    kblob_request,
    parse_result_page,
    read_poll,
)
from utils.errors import ContentPolicyViolation, ImageCoinsExhausted, ImageCreationFailed, InvalidImage

RESULT_PAGE = """<!DOCTYPE html><html><body><div id="gir_async">
<div class="img_cont hoff"><img class="mimg" style="color: #8c7f7f" height="270" width="270"
 src="https://tse1.mm.bing.net/th/id/OIG.abc123?w=270&amp;h=270&amp;c=6&amp;r=0&amp;o=5&amp;pid=ImgGn"
 alt="a cat"/></div>
<div class="img_cont hoff"><img class="mimg gir_mmimg" src="https://tse2.mm.bing.net/th/id/OIG.def456?w=270&amp;h=270"/>
</div><img class="rms_img" src="https://r.bing.com/rp/logo.png"/>
<img class="mimg" src="https://tse1.mm.bing.net/th/id/OIG.abc123?w=540"/>
<img class="mimg" src="/relative/ignored.png"/></div></body></html>"""


def test_result_page_links_lose_their_size_suffix_and_repeats() -> None:
    assert parse_result_page(RESULT_PAGE) == [
        "https://tse1.mm.bing.net/th/id/OIG.abc123",
        "https://tse2.mm.bing.net/th/id/OIG.def456",
    ]
    assert parse_result_page("<html><body>nothing</body></html>") == []


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("<div>This prompt has been blocked. Our system flagged…</div>", Refusal.BLOCKED),
        ("THIS PROMPT IS BEING REVIEWED", Refusal.REVIEWED),
        ("We&#39;re working hard to offer Image Creator in more languages", Refusal.LANGUAGE),
        ("We can\u2019t create your images right now", Refusal.UNAVAILABLE),
        ("You have 0 coins available.", Refusal.NO_COINS),
        ("<html>Image Creator</html>", None),
    ],
)
def test_refusals_are_read_from_bings_words(text: str, refusal: Refusal | None) -> None:
    assert find_refusal(text) is refusal


@pytest.mark.parametrize(
    ("body", "ready", "refusal"),
    [
        ("", False, None),
        ("  \n", False, None),
        ('<div id="GenerativeImagesStatusPage">working</div>', False, None),
        ('{"errorMessage":"Pending"}', True, Refusal.PENDING),
        ('{"something":"else"}', False, None),
        (RESULT_PAGE, True, None),
        ("<div>This prompt has been blocked</div>", True, Refusal.BLOCKED),
    ],
)
def test_poll_answers(body: str, ready: bool, refusal: Refusal | None) -> None:
    poll = read_poll(body)
    assert (poll.ready, poll.refusal) == (ready, refusal)


def test_redirect_ids_placeholders_and_markdown() -> None:
    location = "/images/create?q=a%20cat&rt=4&FORM=GENCRE&id=4-65f1a2b3c4d5&nfy=1"
    assert create_request_id(location) == "4-65f1a2b3c4d5"
    assert create_request_id("/fd/auth/signin?action=interactive") is None
    assert is_placeholder("https://r.bing.com/rp/in-2zU3AJUdkgFe7ZKv19yPBHVs.png")
    assert is_placeholder("https://r.bing.com/rp/TX9QuO3WzcCJz1uaaSwQAz39Kb0.jpg")
    assert not is_placeholder("https://tse1.mm.bing.net/th/id/OIG.abc123")
    assert image_markdown(["https://a/1", "https://a/2"], "a [red]\ncat") == (
        "![a  red  cat](https://a/1)\n![a  red  cat](https://a/2)"
    )


def test_kblob_request_and_answers() -> None:
    request = kblob_request("51D|BingProd|X", "Precise")
    assert request["knowledgeRequest"]["convoData"] == {"convoid": "51D|BingProd|X", "convotone": "Precise"}
    assert request["knowledgeRequest"]["invokedSkills"] == ["ImageById"]
    assert kblob_ids({"blobId": "abc", "processedBlobId": "abc_fb"}) == BlobIds("abc", "abc_fb")
    assert kblob_ids({"blobId": "abc", "processedBlobId": ""}) == BlobIds("abc", "abc")
    assert kblob_ids({"blobId": "", "processedBlobId": "x"}) is None
    assert kblob_ids(["junk"]) is None
    assert (
        blob_image_url("https://www.bing.com", "a+b/c") == "https://www.bing.com/images/blob?bcid=a%2Bb%2Fc"
    )


def bot(**fields: Any) -> dict[str, Any]:
    return {"author": "bot", "messageId": "m", **fields}


def final_item(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"author": "user", "text": "draw"}, *messages], "result": {"value": "Success"}}


def test_generate_content_query_for_images_is_detected() -> None:
    final = parse_final(
        final_item(
            bot(text="I'll try to create that.", messageType="Chat"),
            bot(text="a red fox", messageType="GenerateContentQuery", contentType="IMAGE"),
            bot(text="a song", messageType="GenerateContentQuery", contentType="SUNO"),
            bot(text="  ", messageType="GenerateContentQuery", contentType="IMAGE"),
        )
    )
    assert final.image_prompts == ("a red fox",)
    assert final.answer is not None and final.answer.text == "I'll try to create that."


def test_the_answer_asks_for_the_image_after_its_text_and_before_finishing() -> None:
    state = start_answer(AnswerOptions())
    state, events = advance(state, Final("Success", "", image_prompts=("a red fox",)))
    assert events[0] == ImageRequested("a red fox") and isinstance(events[-1], Finished)
    state = start_answer(AnswerOptions())
    state, events = advance(state, Final("Success", ""))  # no text and no image: still a failure
    assert isinstance(events[0], UpstreamFailure)
    assert not any(isinstance(e, ContentDelta) for e in events)


def png(width: int, height: int, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, kind)
    return out.getvalue()


def test_data_urls_decode_within_the_cap() -> None:
    raw = png(4, 4)
    assert data_url_bytes("data:image/png;base64," + base64.b64encode(raw).decode(), 10_000, "p") == raw
    assert data_url_bytes("data:;base64," + base64.b64encode(raw).decode(), 10_000, "p") == raw
    for url, words in (
        ("data:image/png;base64", "no `,`"),
        ("data:application/pdf;base64,AAAA", "not an image"),
        ("data:image/png;base64,!!!!", "does not decode"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png;base64," + base64.b64encode(raw).decode(), "larger than 10 bytes"),
    ):
        with pytest.raises(InvalidImage) as caught:
            data_url_bytes(url, 10 if "larger" in words else 10_000, "p")
        assert words in caught.value.message and caught.value.param == "p"


def test_pictures_are_kept_downscaled_or_reencoded() -> None:
    small = png(10, 10)
    assert upload_ready(small, 1000, "p") == small  # a small PNG goes as it is
    big = Image.open(io.BytesIO(upload_ready(png(100, 50), 1000, "p")))
    assert (
        big.format == "JPEG"
        and big.width * big.height <= 1000
        and big.width == 2 * big.height + (big.width % 2)
    )
    gif = Image.open(io.BytesIO(upload_ready(png(10, 10, "GIF"), 1000, "p")))
    assert (gif.format, gif.size) == ("JPEG", (10, 10))
    with pytest.raises(InvalidImage):
        upload_ready(b"GIF89a but broken", 1000, "p")
    tiff = io.BytesIO()
    Image.new("RGB", (4, 4)).save(tiff, "TIFF")
    with pytest.raises(InvalidImage) as caught:
        upload_ready(tiff.getvalue(), 1000, "p")
    assert "TIFF" in caught.value.message


def run_drawing(events: list[Any], outcome: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The events `with_images` makes of `events` when Image Creator answers `outcome`."""
    import asyncio

    import conversations.drawing as drawing

    async def fake_create(http: Any, settings: Any, cookies: str, prompt: str) -> list[str]:
        if isinstance(outcome, Exception):
            raise outcome
        return [f"https://img/{prompt}/{i}" for i in range(outcome)]

    async def source() -> Any:
        for event in events:
            yield event

    async def collect() -> list[Any]:
        return [e async for e in drawing.with_images(source(), None, None, "")]  # type: ignore[arg-type]

    monkeypatch.setattr(drawing, "create_images", fake_create)
    return asyncio.run(collect())


def test_drawing_adds_pictures_after_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_drawing([ContentDelta("Sure."), ImageRequested("cat"), Finished("stop")], 2, monkeypatch)
    assert out == [
        ContentDelta("Sure."),
        ContentDelta("\n\n![cat](https://img/cat/0)\n![cat](https://img/cat/1)"),
        Finished("stop"),
    ]
    quiet = run_drawing([ImageRequested("cat"), Finished("stop")], 1, monkeypatch)
    assert isinstance(quiet[0], Waiting) and quiet[1] == ContentDelta("![cat](https://img/cat/0)")


def test_drawing_failures_become_a_note_or_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = run_drawing(
        [ContentDelta("Sure."), ImageRequested("x"), Finished("stop")],
        ContentPolicyViolation("no"),
        monkeypatch,
    )
    assert blocked[-1] == Finished("content_filter") and "blocked" in blocked[1].text
    with pytest.raises(ImageCreationFailed) as caught:
        run_drawing([ContentDelta("Sure."), ImageRequested("x")], ImageCoinsExhausted("0 coins"), monkeypatch)
    assert (caught.value.status, caught.value.code) == (429, "rate_limit_exceeded")
    assert caught.value.envelope()["error"]["type"] == "requests"
