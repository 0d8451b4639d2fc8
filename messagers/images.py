"""Bing's image endpoints as data (PROTOCOL.md §6): kblob requests and answers, Image Creator pages.

Pure: strings and dicts in, values out. The HTTP calls are in `networks/bing_images.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

# Image Creator's stand-ins for images it would not make ("Bad images" in the clients).
PLACEHOLDER_NAMES = ("in-2zU3AJUdkgFe7ZKv19yPBHVs.png", "TX9QuO3WzcCJz1uaaSwQAz39Kb0.jpg")
STATUS_PAGE_MARK = "GenerativeImagesStatusPage"
_IMAGE_CLASSES = frozenset({"mimg", "gir_mmimg"})
_SIZE_SUFFIX = re.compile(r"\?w=.*$")


class Refusal(StrEnum):
    """Why Image Creator refused a prompt, from the text of its page."""

    BLOCKED = "blocked"
    REVIEWED = "reviewed"
    LANGUAGE = "language"
    UNAVAILABLE = "unavailable"
    NO_COINS = "no_coins"
    PENDING = "pending"  # a JSON {"errorMessage": "Pending"} while polling: clients read it as blocked


# Phrases as Bing words them (lower case, straight apostrophes), most specific first.
REFUSAL_PHRASES: tuple[tuple[str, Refusal], ...] = (
    ("this prompt is being reviewed", Refusal.REVIEWED),
    ("this prompt has been blocked", Refusal.BLOCKED),
    ("we're working hard to offer image creator in more languages", Refusal.LANGUAGE),
    ("we can't create your images right now", Refusal.UNAVAILABLE),
    ("0 coins available", Refusal.NO_COINS),
)


@dataclass(frozen=True, slots=True)
class Poll:
    """One polling answer: still working, refused, or the page with the images."""

    ready: bool
    refusal: Refusal | None = None
    page: str = ""


def kblob_request(conversation_id: str, tone: str) -> dict[str, Any]:
    """The `knowledgeRequest` form field for an upload carried as `imageBase64`."""
    return {
        "imageInfo": {},
        "knowledgeRequest": {
            "invokedSkills": ["ImageById"],
            "subscriptionId": "Bing.Chat.Multimodal",
            "invokedSkillsRequestData": {"enableFaceBlur": True},
            "convoData": {"convoid": conversation_id, "convotone": tone},
        },
    }


@dataclass(frozen=True, slots=True)
class BlobIds:
    """An uploaded picture: the id of the original, and of the copy shown to the model."""

    original: str  # `blobId`: goes in `originalImageUrl`
    shown: str  # `processedBlobId` (faces blurred) when Bing made one, else `blobId`: `imageUrl`


def kblob_ids(body: Any) -> BlobIds | None:
    """The ids in a kblob answer; None when `blobId` is missing or empty (Bing refused the image)."""
    if not isinstance(body, dict):
        return None
    blob_id, processed = body.get("blobId"), body.get("processedBlobId")
    if not isinstance(blob_id, str) or not blob_id.strip():
        return None
    shown = processed if isinstance(processed, str) and processed.strip() else blob_id
    return BlobIds(blob_id, shown)


def blob_image_url(web_base: str, blob_id: str) -> str:
    """Where the chat frame points at an uploaded image (`message.imageUrl`)."""
    return f"{web_base}/images/blob?bcid={quote(blob_id, safe='')}"


def normalize_text(text: str) -> str:
    """Lower case with straight apostrophes, so Bing's wording matches however it is encoded."""
    return text.lower().replace("\u2019", "'").replace("&#39;", "'").replace("&#x27;", "'")


def find_refusal(text: str) -> Refusal | None:
    """The refusal an Image Creator page (or answer body) states, if any."""
    lowered = normalize_text(text)
    for phrase, refusal in REFUSAL_PHRASES:
        if phrase in lowered:
            return refusal
    return None


def create_request_id(location: str) -> str | None:
    """The request id in the redirect after POST /images/create (`…&id=<id>`), or None."""
    ids = parse_qs(urlsplit(location).query).get("id")
    return ids[0] if ids and ids[0] else None


def read_poll(body: str) -> Poll:
    """Classify one answer of the results endpoint."""
    stripped = body.strip()
    if not stripped or STATUS_PAGE_MARK in stripped:
        return Poll(ready=False)
    if stripped.startswith("{"):
        if '"errormessage"' in stripped.lower() and "pending" in stripped.lower():
            return Poll(ready=True, refusal=Refusal.PENDING)
        return Poll(ready=False)
    return Poll(ready=True, refusal=find_refusal(stripped), page=stripped)


class _ImageLinks(HTMLParser):
    """Collects the `src` of `<img class="mimg">` (and `gir_mmimg`) tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "img":
            return
        values = dict(attrs)
        classes = set((values.get("class") or "").split())
        source = values.get("src") or ""
        if classes & _IMAGE_CLASSES and source:
            self.found.append(source)


def parse_result_page(page: str) -> list[str]:
    """The image URLs of a results page, size suffix (`?w=…`) dropped, each once, in order."""
    parser = _ImageLinks()
    parser.feed(page)
    parser.close()
    urls: list[str] = []
    for source in parser.found:
        url = _SIZE_SUFFIX.sub("", source)
        if url.startswith(("https://", "http://")) and url not in urls:
            urls.append(url)
    return urls


def is_placeholder(url: str) -> bool:
    """True for Image Creator's stand-in pictures, which mean the images were not made."""
    return urlsplit(url).path.rsplit("/", 1)[-1] in PLACEHOLDER_NAMES


def image_markdown(urls: list[str], prompt: str) -> str:
    """Markdown images for chat content, one per line; the alt text is the prompt (brackets escaped)."""
    alt = re.sub(r"[\[\]\n]", " ", prompt).strip()[:100] or "image"
    return "\n".join(f"![{alt}]({url})" for url in urls)
