"""From an OpenAI request's parts to a `TurnPlan`: model, prompt within budget, options, identity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conversations.composer import Limits, compose_prompt
from conversations.models import COPILOT, ModelSpec, resolve_model
from conversations.threads import caller_scope, thread_key
from conversations.turn import TurnPlan
from messagers.events import AnswerOptions
from utils.errors import ContextLengthExceeded, InvalidRequest
from utils.settings import Settings

INLINE_EXTRAS = frozenset({"search", "sources", "suggestions"})


def plan_turn(
    messages: Sequence[Mapping[str, Any]],
    model: str | None,
    inline_extras: Iterable[str] | None,
    settings: Settings,
    caller: str = "",
) -> TurnPlan:
    """Validate and compose; raises InvalidRequest, ContextLengthExceeded or ModelNotFound.

    `caller` identifies who asks (their API key and user id): conversations are never shared across it.
    """
    if len(messages) > settings.max_messages:
        raise ContextLengthExceeded(
            f"The request has {len(messages)} messages; at most {settings.max_messages} are accepted "
            "(MAX_MESSAGES).",
            param="messages",
        )
    spec = resolve_model(model, settings.alias_map, settings.default_model)
    limits = limits_for(spec, settings)
    prompt = compose_prompt(messages, limits)
    inline = frozenset(inline_extras) if inline_extras is not None else settings.inline_extra_set
    unknown = inline - INLINE_EXTRAS
    if unknown:
        raise InvalidRequest(
            f"Unknown inline extras {sorted(unknown)}; choose from {sorted(INLINE_EXTRAS)}.",
            param="inline_extras",
        )
    scope = caller_scope(settings.bing_create_url, caller)  # the account is checked on the thread
    extends_answer = len(messages) >= 2 and messages[-2].get("role") == "assistant"
    history_key = thread_key(scope, spec.id, messages[:-1]) if extends_answer else None
    options = AnswerOptions(inline, settings.throttle_retry_after)
    return TurnPlan(prompt, spec, options, limits, scope, tuple(messages), history_key)


def limits_for(model: ModelSpec, settings: Settings) -> Limits:
    """Bing: MAX_PROMPT_CHARS and MAX_CONTEXT_CHARS; Copilot, which has no context slot: one budget,
    COPILOT_MAX_PROMPT_CHARS, for the first message (instructions, history and prompt together)."""
    if model.upstream == COPILOT:
        budget = settings.copilot_max_prompt_chars
        return Limits(budget, budget, "COPILOT_MAX_PROMPT_CHARS", "Copilot")
    return Limits(settings.max_prompt_chars, settings.max_context_chars)
