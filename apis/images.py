"""`POST /v1/images/generations` (OpenAI's images API) over Bing's Image Creator."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from apis.auth import require_api_key
from apis.schemas import ImageRequest
from apis.streaming import ClientGone, until_disconnect
from conversations.images import generate_images, image_job
from conversations.turn import Upstream

log = logging.getLogger(__name__)
images_router = APIRouter(dependencies=[Depends(require_api_key)])


@images_router.post("/images/generations", response_model=None)
async def create_images(body: ImageRequest, request: Request) -> Response:
    """Up to four pictures for `prompt` (Bing's Image Creator, or Copilot when `model` names a Copilot
    model), as URLs or base64; errors as the OpenAI envelope."""
    upstream: Upstream = request.app.state.upstream
    job = image_job(body.prompt, body.n, body.response_format, body.model, upstream.settings)
    if body.model_extra:
        log.debug("ignored image request fields: %s", sorted(body.model_extra))
    try:
        result: dict[str, Any] = await until_disconnect(request, generate_images(job, upstream))
    except ClientGone:
        return Response(status_code=499)
    request.app.state.health.record_success()
    return JSONResponse(result)
