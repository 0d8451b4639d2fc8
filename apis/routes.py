"""The OpenAI routes (mounted under no prefix, /v1, /api and /api/v1) and the service routes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from apis import __version__
from apis.auth import require_admin_key, require_api_key, supplied_key
from apis.health import health_report
from apis.schemas import ChatRequest, check_supported
from apis.streaming import AnswerStream, ClientGone, collect_completion, sse_body, until_disconnect
from conversations.images import prepare_plan_images
from conversations.models import COPILOT, CREATED, ModelSpec, list_models
from conversations.plan import plan_turn
from conversations.turn import Answer, TurnPlan, Upstream, open_answer
from messagers.chunks import new_context
from utils.errors import ModelNotFound
from utils.tracking import note_model

log = logging.getLogger(__name__)
openai_router = APIRouter(dependencies=[Depends(require_api_key)])
service_router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@openai_router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: ChatRequest, request: Request) -> Response:
    """OpenAI chat completions over one upstream turn; errors before the first byte get real statuses.

    This route documents the endpoint and serves the requests `apis/chat_route.py` passes on (bodies
    that are not plain valid JSON requests); well-formed ones are answered there, by `answer_chat` too."""
    return await answer_chat(body, request)


async def answer_chat(body: ChatRequest, request: Request) -> Response:
    """The answer to a validated chat completion request, from whichever route took it."""
    check_supported(body)
    upstream: Upstream = request.app.state.upstream
    messages = [message.model_dump() for message in body.messages]
    caller = f"{supplied_key(request)}\x00{body.user if isinstance(body.user, str) else ''}"
    plan = plan_turn(messages, body.model, body.inline_extras, upstream.settings, caller)
    note_model(plan.model.id, bool(body.stream))  # for the request's log line and metrics
    if upstream.settings.log_prompts:  # off by default: prompts are the users' business
        log.info("prompt (%s): %s", plan.model.id, plan.prompt.text)
    ctx = new_context(body.model or plan.model.id, include_usage=body.include_usage)
    prompt_text = plan.prompt.context + plan.prompt.text
    try:
        answer = await until_disconnect(request, answer_with_images(plan, upstream))
        if body.stream:
            events = sse_body(answer, ctx, prompt_text, request.app.state.health)
            return AnswerStream(events, ping=upstream.settings.sse_ping_seconds, headers=SSE_HEADERS)
        result = await until_disconnect(request, collect_completion(answer, ctx, prompt_text))
    except ClientGone:
        return Response(status_code=499)
    request.app.state.health.record_success()
    return JSONResponse(result)


async def answer_with_images(plan: TurnPlan, upstream: Upstream) -> Answer:
    """The prompt's picture checked and uploaded (issue 6: vision), then the upstream turn opened."""
    return await open_answer(await prepare_plan_images(plan, upstream), upstream)


@openai_router.get("/models")
async def list_model_objects(request: Request) -> dict[str, Any]:
    """Every model id (the six Bing models, the three Copilot ones, and the configured aliases)."""
    entries = list_models(request.app.state.settings.alias_map)
    return {"object": "list", "data": [model_object(name, spec) for name, spec in entries]}


@openai_router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    """One model, or 404 `model_not_found`."""
    for name, spec in list_models(request.app.state.settings.alias_map):
        if name == model_id:
            return model_object(name, spec)
    raise ModelNotFound(f"The model `{model_id}` does not exist.", param="model")


@service_router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness plus the upstream in use and its latest outcome."""
    upstream: Upstream = request.app.state.upstream
    await upstream.accounts.sync()
    state = request.app.state
    return health_report(upstream.settings, state.health, __version__, upstream.accounts, state.shared)


@service_router.get("/v1/accounts", dependencies=[Depends(require_admin_key)])
async def list_accounts(request: Request) -> dict[str, Any]:
    """Each account's name, state, last error, uses and cooldown (never its cookies); needs ADMIN_KEY."""
    upstream: Upstream = request.app.state.upstream
    await upstream.refresh_accounts()
    await upstream.accounts.sync()
    return {"object": "list", "data": upstream.accounts.public_view()}


def model_object(name: str, spec: ModelSpec) -> dict[str, Any]:
    """A model in OpenAI's shape, with a description, its upstream and what it maps to there."""
    body: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": CREATED,
        "owned_by": spec.upstream,
        "description": spec.description if name == spec.id else f"Alias of `{spec.id}`. {spec.description}",
        "upstream": spec.upstream,
    }
    if spec.upstream == COPILOT:
        body["mode"] = spec.mode
    else:
        body["tone"] = spec.tone.lower()
        body["web_search"] = spec.search
    return body
