"""Vision input: the prompt's picture checked, downscaled and uploaded to Bing's kblob (PROTOCOL.md
§6.2) or to Copilot's attachments (§7.2).

A `data:` URL is decoded; an http(s) URL is fetched through the shared client (bounded in bytes and
time). Either way the bytes must be a picture Pillow can read, of an accepted type, within
MAX_IMAGE_BYTES; a picture over IMAGE_MAX_PIXELS is downscaled (and anything not JPEG or PNG is
re-encoded) before it goes to kblob. Every refusal is a 400 `invalid_image`.
"""

from __future__ import annotations

import asyncio
import binascii
import io
import json
import math
from base64 import b64decode
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from conversations.composer import ImageAttachment
from messagers.images import BlobIds, blob_image_url, kblob_ids, kblob_request
from networks.bing_images import WebAnswer, download, post_attachment, post_kblob
from networks.copilot import copilot_headers
from utils.errors import InvalidImage, ProxyError, UpstreamBadResponse
from utils.settings import Settings

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})
UPLOAD_AS_IS = frozenset({"JPEG", "PNG"})
DECODE_PIXEL_CAP = 64_000_000  # more than any camera makes; beyond it a 'picture' is a decompression bomb
JPEG_QUALITY = 85
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def prepare_attachment(
    attachment: ImageAttachment, http: httpx.AsyncClient, settings: Settings
) -> ImageAttachment:
    """The attachment with the bytes to upload; raises InvalidImage (400) for anything unusable."""
    raw = await image_bytes(attachment, http, settings)
    data = await asyncio.to_thread(upload_ready, raw, settings.image_max_pixels, attachment.param)
    return replace(attachment, data=data)


async def image_bytes(attachment: ImageAttachment, http: httpx.AsyncClient, settings: Settings) -> bytes:
    """The picture's bytes as given: decoded from a `data:` URL, or fetched from an http(s) URL."""
    source, param = attachment.source, attachment.param
    if source[:5].lower() == "data:":
        return data_url_bytes(source, settings.max_image_bytes, param)
    scheme = urlsplit(source).scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidImage("An image_url must be an https URL or a `data:` URL.", param=param)
    if not settings.image_fetch_urls:
        raise InvalidImage(
            "This service takes images as `data:` URLs only (IMAGE_FETCH_URLS=0).", param=param
        )

    def failure(reason: str) -> ProxyError:
        return InvalidImage(f"The image at image_url cannot be used: {reason}.", param=param)

    fetched = await download(
        http,
        source,
        max_bytes=settings.max_image_bytes,
        timeout=settings.image_fetch_timeout,
        failure=failure,
    )
    declared = fetched.content_type.split(";")[0].strip().lower()
    if declared and not declared.startswith("image/") and declared != "application/octet-stream":
        raise failure(f"its server says it is `{declared}`, not an image")
    return fetched.content


def data_url_bytes(url: str, max_bytes: int, param: str) -> bytes:
    """Decode `data:[<type>][;base64],<data>`; the type must be an image's (or absent)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise InvalidImage("The `data:` URL has no `,` before its data.", param=param)
    media = header.split(";")[0].strip().lower()
    if media and not media.startswith("image/"):
        raise InvalidImage(f"The `data:` URL holds `{media}`, not an image.", param=param)
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise InvalidImage(f"The image is larger than {max_bytes} bytes (MAX_IMAGE_BYTES).", param=param)
    try:
        data = b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage("The `data:` URL's base64 data does not decode.", param=param) from exc
    if len(data) > max_bytes:
        raise InvalidImage(f"The image is larger than {max_bytes} bytes (MAX_IMAGE_BYTES).", param=param)
    if not data:
        raise InvalidImage("The `data:` URL is empty.", param=param)
    return data


def upload_ready(raw: bytes, max_pixels: int, param: str) -> bytes:
    """The bytes to upload: `raw` itself when it is a JPEG or PNG within `max_pixels`, else the
    picture downscaled (or re-encoded) as JPEG. Raises InvalidImage when it is no accepted picture."""
    with open_image(raw, param) as image:
        pixels = image.width * image.height
        if image.format in UPLOAD_AS_IS and pixels <= max_pixels:
            return raw
        try:
            image.load()
            return encode_jpeg(image, max_pixels)
        except (OSError, ValueError) as exc:
            raise InvalidImage("The image data is damaged and cannot be read.", param=param) from exc


def open_image(raw: bytes, param: str) -> Image.Image:
    """Pillow's view of `raw` (header only); refuses non-pictures, other types and absurd sizes."""
    try:
        image = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidImage("The data is not a picture this service can read.", param=param) from exc
    if image.format not in ACCEPTED_FORMATS:
        image.close()
        kinds = ", ".join(sorted(ACCEPTED_FORMATS))
        raise InvalidImage(
            f"Images of type {image.format} are not accepted; send one of {kinds}.", param=param
        )
    if image.width * image.height > DECODE_PIXEL_CAP:
        image.close()
        raise InvalidImage(f"The image has more than {DECODE_PIXEL_CAP} pixels.", param=param)
    return image


def encode_jpeg(image: Image.Image, max_pixels: int) -> bytes:
    """The picture as an RGB JPEG of at most `max_pixels` (aspect ratio kept)."""
    scale = min(1.0, math.sqrt(max_pixels / max(image.width * image.height, 1)))
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    frame: Any = image.convert("RGB")
    if size != frame.size:
        frame = frame.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


async def attach_image(
    request: dict[str, Any],
    attachment: ImageAttachment,
    http: httpx.AsyncClient,
    settings: Settings,
    cookies: str,
) -> None:
    """Upload the picture for this turn's conversation and point the chat frame's message at it."""
    argument = request["arguments"][0]
    knowledge = kblob_request(str(argument["conversationId"]), str(argument["tone"]))
    blob = await upload_image(http, settings, cookies, knowledge, attachment)
    argument["message"]["imageUrl"] = blob_image_url(settings.web_base, blob.shown)
    argument["message"]["originalImageUrl"] = blob_image_url(settings.web_base, blob.original)


async def upload_image(
    http: httpx.AsyncClient,
    settings: Settings,
    cookies: str,
    knowledge: dict[str, Any],
    image: ImageAttachment,
) -> BlobIds:
    """The blob ids of the uploaded picture; raises InvalidImage (400) when Bing refuses it (no
    blobId) and UpstreamBadResponse (502) for any other answer than JSON with HTTP 200."""
    body = upload_body(await post_kblob(http, settings, cookies, knowledge, image.data), "Bing")
    blob = kblob_ids(body)
    if blob is None:
        raise InvalidImage(
            "Bing refused the uploaded image (no blobId): try another picture.", param=image.param
        )
    return blob


def upload_body(answer: WebAnswer, upstream: str) -> Any:
    """The JSON body of an image upload's HTTP 200 answer; any other answer is a 502."""
    if answer.status != 200:
        raise UpstreamBadResponse(f"{upstream}'s image upload answered HTTP {answer.status}.")
    try:
        return json.loads(answer.text)
    except ValueError as exc:
        raise UpstreamBadResponse(f"{upstream}'s image upload answered something other than JSON.") from exc


async def attach_copilot_image(
    event: dict[str, Any],
    attachment: ImageAttachment,
    http: httpx.AsyncClient,
    settings: Settings,
    cookies: str,
    token: str,
) -> None:
    """Upload the picture to Copilot's attachments and put it first in the `send` event's content."""
    headers = copilot_headers(cookies, token, settings.copilot_url)
    media = "image/png" if attachment.data.startswith(PNG_SIGNATURE) else "image/jpeg"
    body = upload_body(await post_attachment(http, settings, headers, attachment.data, media), "Copilot")
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url:
        raise InvalidImage(
            "Copilot refused the uploaded image (no url): try another picture.", param=attachment.param
        )
    event["content"].insert(0, {"type": "image", "url": url})
