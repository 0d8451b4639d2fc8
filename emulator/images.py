"""Bing's image endpoints (PROTOCOL.md §6) on the emulator's keep-alive HTTP port.

- `POST /images/kblob`: multipart `knowledgeRequest` (JSON) + `imageBase64`; answers
  `{"blobId", "processedBlobId"}`, with an empty `blobId` when the picture is refused.
- `GET /images/blob?bcid=<blobId>`: the uploaded picture.
- `POST /images/create?q=…&rt=4&FORM=GENCRE`: 302 to `/images/create?…&id=<requestId>&nfy=1`
  (signed-in accounts only: anonymous ones are sent to sign in); refusals are pages with Bing's words.
- `GET /images/create/async/results/<requestId>?q=…`: empty until the pictures are ready, then the
  result page with `<img class="mimg">` links.
- `GET /th/id/OIG.<token>`: the pictures themselves (PNG).
- `GET /_emulator/picture?w=&h=&type=png|jpeg|webp|text`: a test picture to link to as image_url.
- Copilot's `POST /c/api/attachments` (PROTOCOL.md §7.2): the raw picture with its `Content-Type`,
  answered `{"url": ...}` (`{}` when refused; 401 without a token or the anonymous cookie).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from PIL import Image, UnidentifiedImageError

from .copilot_start import authenticated, bearer
from .faults import cookie_flags, image_fault_in
from .httpserver import HttpReply, HttpRequest

if TYPE_CHECKING:
    from .server import BingEmulator

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
IMAGE_PATHS = ("/images/", "/th/id/", "/_emulator/picture", "/c/api/attachments")
ATTACHMENTS = "/c/api/attachments"
PLACEHOLDERS = (
    "https://r.bing.com/rp/in-2zU3AJUdkgFe7ZKv19yPBHVs.png",
    "https://r.bing.com/rp/TX9QuO3WzcCJz1uaaSwQAz39Kb0.jpg",
)
REFUSAL_PAGES = {
    "image_blocked": "This prompt has been blocked. Our system flagged this prompt because it may "
    "conflict with our content policy.",
    "image_reviewed": "This prompt is being reviewed. Please wait while we check it.",
    "image_language": "We're working hard to offer Image Creator in more languages.",
    "image_unavailable": "We can't create your images right now. Please try again later.",
    "no_coins": "You have 0 coins available. Boosts are used up; creations will take longer.",
}
IMAGES_PER_CREATION = 4
SIGN_IN = "/fd/auth/signin?action=interactive&provider=windows_live_id&return_url=%2fimages%2fcreate"


@dataclass
class Upload:
    """One picture received by /images/kblob."""

    blob_id: str
    format: str
    width: int
    height: int
    size: int
    conversation_id: str
    tone: str
    data: bytes = field(repr=False)


@dataclass
class Creation:
    """One Image Creator request, for tests to inspect."""

    request_id: str
    prompt: str
    fault: str | None
    signed_in: bool
    ready_at: float
    polls: int = 0
    urls: list[str] = field(default_factory=list)


def is_image_path(path: str) -> bool:
    """Whether the image handlers answer PATH."""
    return path.startswith(IMAGE_PATHS)


async def handle_images(emu: BingEmulator, request: HttpRequest) -> HttpReply:
    """Answer one request on an image path."""
    path, query = request.path, parse_qs(urlsplit(request.target).query)
    cookie = request.header("cookie", "; ")
    if path == "/images/kblob" and request.method == "POST":
        return kblob(emu, request, cookie)
    if path == "/images/blob":
        upload = emu.blobs.get(_first(query, "bcid"))
        return HttpReply(200, upload.data, "image/jpeg") if upload else HttpReply(404, "", HTML)
    if path == "/images/create" and request.method == "POST":
        return start_creation(emu, request, query, cookie)
    if path == "/images/create":
        return HttpReply(200, _page("GenerativeImagesStatusPage: your images are on their way."), HTML)
    if path.startswith("/images/create/async/results/"):
        return poll(emu, path.rsplit("/", 1)[-1])
    if path.startswith("/th/id/"):
        picture = emu.pictures.get(path.rsplit("/", 1)[-1])
        return HttpReply(200, picture, "image/png") if picture else HttpReply(404, "", HTML)
    if path == "/_emulator/picture":
        return sample_picture(query)
    if path == ATTACHMENTS and request.method == "POST":
        return copilot_attachment(emu, request, cookie)
    if path.startswith(ATTACHMENTS + "/"):
        found = emu.copilot_attachments.get(f"{emu.web_url}{path}")
        return HttpReply(200, found.data, "image/jpeg") if found else HttpReply(404, "", HTML)
    return HttpReply(404, "", HTML)


def kblob(emu: BingEmulator, request: HttpRequest, cookie: str) -> HttpReply:
    """Store an uploaded picture and answer its blob id (empty when refused)."""
    emu.upload_count += 1
    refused = {"blobId": "", "processedBlobId": ""}
    fault = emu.faults.upload or ("upload_refused" if "upload_refused" in cookie_flags(cookie) else None)
    if fault == "upload_http500":
        return HttpReply(500, "", HTML)
    fields = form_fields(request)
    try:
        knowledge = json.loads(fields.get("knowledgeRequest", b"{}"))
        convo = knowledge["knowledgeRequest"]["convoData"]
        data = base64.b64decode(fields.get("imageBase64", b""), validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        log.debug("kblob: malformed upload")
        return HttpReply(200, json.dumps(refused))
    if fault == "upload_refused":
        return HttpReply(200, json.dumps(refused))
    upload = read_picture(data, str(convo.get("convoid", "")), str(convo.get("convotone", "")))
    if upload is None:
        return HttpReply(200, json.dumps(refused))
    processed = upload.blob_id + "_fb"  # the face-blurred copy; the same picture here
    emu.blobs[upload.blob_id] = emu.blobs[processed] = upload
    emu.uploads.append(upload)
    return HttpReply(200, json.dumps({"blobId": upload.blob_id, "processedBlobId": processed}))


def copilot_attachment(emu: BingEmulator, request: HttpRequest, cookie: str) -> HttpReply:
    """Copilot's attachment upload: a picture in, its URL out (for a `send` event's image part)."""
    if not authenticated(cookie, bearer(request.header("authorization"))):
        return HttpReply(401, json.dumps({"error": "Invalid session"}))
    emu.upload_count += 1
    fault = emu.faults.upload or ("upload_refused" if "upload_refused" in cookie_flags(cookie) else None)
    if fault == "upload_http500":
        return HttpReply(500, "", HTML)
    upload = read_picture(request.body, "", "")
    if fault == "upload_refused" or upload is None or not request.header("content-type").startswith("image/"):
        return HttpReply(200, "{}")
    url = f"{emu.web_url}{ATTACHMENTS}/{upload.blob_id}"
    emu.copilot_attachments[url] = upload
    emu.uploads.append(upload)
    return HttpReply(200, json.dumps({"url": url}))


def form_fields(request: HttpRequest) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    head = f"Content-Type: {request.header('content-type')}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload
    return fields


def read_picture(data: bytes, conversation_id: str, tone: str) -> Upload | None:
    """An Upload when `data` is a picture, else None (Bing refuses it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            kind, width, height = str(image.format), image.width, image.height
    except (UnidentifiedImageError, OSError, SyntaxError):
        return None
    return Upload(secrets.token_hex(16), kind, width, height, len(data), conversation_id, tone, data)


def start_creation(
    emu: BingEmulator, request: HttpRequest, query: dict[str, list[str]], cookie: str
) -> HttpReply:
    """POST /images/create: a refusal page, a sign-in redirect, or the redirect to the results."""
    form = parse_qs(request.body.decode("utf-8", "replace"))
    prompt = _first(form, "q") or _first(query, "q")
    if not prompt:
        return HttpReply(400, "", HTML)
    signed_in = any(p.strip().startswith("_U=") and len(p.strip()) > 3 for p in cookie.split(";"))
    if not signed_in:
        return HttpReply(302, "", HTML, [("Location", SIGN_IN)])
    fault = image_fault_in(prompt) or emu.faults.image
    if fault is None and "no_coins" in cookie_flags(cookie):
        fault = "no_coins"
    if fault in REFUSAL_PAGES:
        emu.fault_counts[f"image:{fault}"] += 1
        return HttpReply(200, _page(REFUSAL_PAGES[fault]), HTML)
    if fault == "image_rt3" and _first(query, "rt") != "3":
        return HttpReply(200, _page("Image Creator"), HTML)
    creation = Creation(
        secrets.token_hex(16), prompt, fault, signed_in, time.monotonic() + emu.image_ready_seconds
    )
    emu.creations.append(creation)
    emu.creations_by_id[creation.request_id] = creation
    location = f"/images/create?q={quote(prompt)}&rt=4&FORM=GENCRE&id={creation.request_id}&nfy=1"
    return HttpReply(302, "", HTML, [("Location", location)])


def poll(emu: BingEmulator, request_id: str) -> HttpReply:
    """The results endpoint: empty while working, then the page (or a late refusal)."""
    creation = emu.creations_by_id.get(request_id)
    if creation is None:
        return HttpReply(404, "", HTML)
    creation.polls += 1
    if creation.fault == "image_timeout" or time.monotonic() < creation.ready_at:
        return HttpReply(200, "", HTML)
    if creation.fault == "image_pending":
        return HttpReply(200, json.dumps({"errorMessage": "Pending"}))
    if creation.fault == "image_placeholder":
        creation.urls = [PLACEHOLDERS[0]]
    elif not creation.urls:
        creation.urls = [new_picture(emu, creation.prompt, i) for i in range(IMAGES_PER_CREATION)]
    tags = "".join(
        f'<div class="img_cont"><img class="mimg" src="{escape(url)}?w=270&amp;h=270'
        f'&amp;c=6&amp;r=0&amp;o=5&amp;pid=ImgGn" alt="{escape(creation.prompt)}"/></div>'
        for url in creation.urls
    )
    return HttpReply(200, _page(f'<div id="gir_async">{tags}</div>'), HTML)


def new_picture(emu: BingEmulator, prompt: str, index: int) -> str:
    """Paint a picture for the prompt, keep its PNG bytes, and return its URL."""
    token = f"OIG.{secrets.token_urlsafe(12)}"
    shade = hashlib.sha256(f"{prompt}\x00{index}".encode()).digest()
    emu.pictures[token] = picture_bytes(64, 64, "PNG", (shade[0], shade[1], shade[2]))
    return f"{emu.web_url}/th/id/{token}"


def picture_bytes(width: int, height: int, kind: str, color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A solid picture of the given size and type."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, kind)
    return out.getvalue()


def sample_picture(query: dict[str, list[str]]) -> HttpReply:
    """A test picture (or text, for `type=text`) of the asked size."""
    kind = (_first(query, "type") or "png").lower()
    if kind == "text":
        return HttpReply(200, "not a picture", "text/plain; charset=utf-8")
    formats = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
    if kind not in formats:
        return HttpReply(404, "", HTML)
    try:
        width, height = int(_first(query, "w") or 32), int(_first(query, "h") or 32)
    except ValueError:
        return HttpReply(400, "", HTML)
    width, height = min(max(width, 1), 4000), min(max(height, 1), 4000)
    return HttpReply(200, picture_bytes(width, height, formats[kind]), f"image/{kind}")


def _first(query: dict[str, list[str]], name: str) -> str:
    """The first value of a query or form field, or ''."""
    values = query.get(name)
    return values[0] if values else ""


def _page(body: str) -> str:
    """A minimal Bing-like HTML page."""
    return f"<!DOCTYPE html><html><head><title>Bing Image Creator</title></head><body>{body}</body></html>"


def describe(upload: Upload) -> str:
    """How the emulated chat answer mentions a picture it was shown."""
    return f"{upload.width}x{upload.height} {upload.format} picture"


def blob_of(image_url: Any) -> str | None:
    """The blob id in a chat frame's `imageUrl` (`…/images/blob?bcid=<id>`), or None."""
    if not isinstance(image_url, str):
        return None
    parts = urlsplit(image_url)
    if parts.path != "/images/blob":
        return None
    return _first(parse_qs(parts.query), "bcid") or None
