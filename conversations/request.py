"""The ChatHub `type:4` chat invocation for one turn (PROTOCOL.md §3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conversations.composer import ComposedPrompt
from conversations.models import ModelSpec
from networks.http_client import SessionIds
from utils.ids import hex_id, uuid_text

SEARCH_PLUGIN = {"id": "c310c353-b9f0-4d76-ab0d-1dd5e979cf68", "category": 1}
CONTEXT_MESSAGE_ID = "discover-web--page-ping-mriduna-----"
BASE_OPTIONS = (
    "nlu_direct_response_filter",
    "deepleo",
    "disable_emoji_spoken_text",
    "responsible_ai_policy_235",
    "enablemm",
    "dv3sugg",
    "autosave",
    "iyxapbing",
    "iycapbing",
)
TONE_OPTIONS = {
    "Creative": ("h3imaginative", "clgalileo", "gencontentv3"),
    "Balanced": ("galileo", "saharagenconv5"),
    "Precise": ("h3precise", "clgalileo", "gencontentv3"),
}
# What Bing may stream back. Search results, loader messages, ads and cards are left out: nothing
# here uses them, and every one is another frame repeating the whole answer (PROTOCOL.md §3.2).
ALLOWED_MESSAGE_TYPES = (
    "ActionRequest",
    "Chat",
    "ConfirmationCard",
    "Context",
    "InternalSearchQuery",
    "Disengaged",
    "InvokeAction",
    "Progress",
    "GenerateContentQuery",
    "SearchQuery",
)


def build_chat_request(
    prompt: ComposedPrompt, session: SessionIds, model: ModelSpec, locale: str, *, turn: int = 0
) -> dict[str, Any]:
    """Turn `turn` of a conversation; the first carries the context in `previousMessages`."""
    request_id = uuid_text()
    argument: dict[str, Any] = {
        "source": "cib",
        "optionsSets": options_sets(model),
        "allowedMessageTypes": list(ALLOWED_MESSAGE_TYPES),
        "sliceIds": [],
        "verbosity": "verbose",
        "scenario": "SERP",
        "plugins": [SEARCH_PLUGIN] if model.search else [],
        "traceId": hex_id(),
        "conversationHistoryOptionsSets": ["autosave", "savemem", "uprofupd", "uprofgen"],
        "gptId": "copilot",
        "isStartOfSession": turn == 0,
        "requestId": request_id,
        "message": user_message(prompt.text, request_id, locale),
        "tone": model.tone,
        "spokenTextMode": "None",
        "conversationId": session.conversation_id,
        "participant": {"id": session.client_id},
    }
    if session.signature:
        argument["conversationSignature"] = session.signature
    if prompt.context and turn == 0:
        argument["previousMessages"] = [context_message(prompt.context)]
    return {"arguments": [argument], "invocationId": str(turn), "target": "chat", "type": 4}


def options_sets(model: ModelSpec) -> list[str]:
    """Feature flags: the common base, the tone's selectors, and `nosearchall` when offline."""
    flags = [*BASE_OPTIONS, *TONE_OPTIONS[model.tone]]
    return flags if model.search else [*flags, "nosearchall"]


def user_message(text: str, request_id: str, locale: str) -> dict[str, Any]:
    """The `message` object carrying the prompt."""
    return {
        "author": "user",
        "inputMethod": "Keyboard",
        "text": text,
        "messageType": "Chat",
        "requestId": request_id,
        "messageId": request_id,
        "locale": locale,
        "market": locale,
        "region": locale.rsplit("-", 1)[-1],
        "timestamp": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
    }


def context_message(context: str) -> dict[str, Any]:
    """Instructions and history as the 'web page' Bing is chatting about."""
    return {
        "author": "user",
        "description": context,
        "contextType": "WebPage",
        "messageType": "Context",
        "messageId": CONTEXT_MESSAGE_ID,
    }
