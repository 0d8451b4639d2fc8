"""SignalR JSON-hub records and Sydney message objects (pure builders)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .text import SUGGESTIONS, Source, card_text, cited

RS = "\x1e"
Record = dict[str, Any]
PING: Record = {"type": 6}
CLOSE7: Record = {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}
SERVICE_VERSION = "20240101.1"


def encode(records: list[Record]) -> str:
    """Serialize records into one websocket text message, each ending with 0x1E."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + RS for r in records)


def split_records(message: str) -> list[Any]:
    """Split one websocket message on 0x1E into parsed JSON values (bad pieces are skipped)."""
    out: list[Any] = []
    for piece in message.split(RS):
        if piece.strip():
            try:
                out.append(json.loads(piece))
            except ValueError:
                continue
    return out


def iso(ts: float | None = None) -> str:
    """Return a UTC ISO-8601 timestamp like Bing's."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def update(args: Record) -> Record:
    """Wrap arguments in a type 1 `update` invocation."""
    return {"type": 1, "target": "update", "arguments": [args]}


def throttling_update(throttling: Record, request_id: str) -> Record:
    """Return the first update of a turn: throttling counters only."""
    return update({"throttling": throttling, "requestId": request_id})


def unknown_target_record() -> Record:
    """Return an invocation with a target clients do not know (they must ignore it)."""
    return {"type": 1, "target": "someNewTarget", "arguments": [{}]}


def message_update(message: Record, request_id: str, cursor: bool = False) -> Record:
    """Return an update carrying one message; `cursor` marks the start of a text block."""
    args: Record = {"messages": [message], "requestId": request_id}
    if cursor:
        args["cursor"] = {"j": f"$['{message['messageId']}'].adaptiveCards[0].body[0].text",
                          "p": -1}
    return update(args)


def _card(text: str) -> list[Record]:
    """Return a one-TextBlock adaptive card list."""
    return [{"type": "AdaptiveCard", "version": "1.0",
             "body": [{"type": "TextBlock", "text": text, "wrap": True}]}]


def bot_message(msg_id: str, request_id: str, text: str, sources: list[Source], *,
                origin: str = "DeepLeo", message_type: str | None = None,
                final: bool = False) -> Record:
    """Return a bot answer message with the cumulative `text` so far."""
    now = iso()
    message: Record = {
        "text": text, "author": "bot", "createdAt": now, "timestamp": now,
        "messageId": msg_id, "requestId": request_id, "offense": "None",
        "adaptiveCards": _card(card_text(text, sources)),
        "sourceAttributions": [_attribution(s)
                               for s in (sources if final else cited(text, sources))],
        "feedback": {"tag": None, "updatedOn": None, "type": "None"},
        "contentOrigin": origin, "privacy": None,
    }
    if message_type is not None:
        message["messageType"] = message_type
    if final and origin == "DeepLeo":
        message["suggestedResponses"] = [_suggestion(t, request_id) for t in SUGGESTIONS]
    return message


def _attribution(source: Source) -> Record:
    """Return one sourceAttributions entry."""
    return {"providerDisplayName": source.title, "seeMoreUrl": source.url,
            "searchQuery": source.query}


def _suggestion(text: str, request_id: str) -> Record:
    """Return one suggestedResponses entry."""
    now = iso()
    return {"text": text, "author": "user", "createdAt": now, "timestamp": now,
            "messageId": str(uuid.uuid4()), "messageType": "Suggestion", "offense": "Unknown",
            "feedback": {"tag": None, "updatedOn": None, "type": "None"},
            "contentOrigin": "SuggestionChipsFalconService", "requestId": request_id}


def status_message(message_type: str, text: str, request_id: str, hidden: str | None = None,
                   origin: str = "DeepLeo") -> Record:
    """Return a progress/internal bot message (search query, results, loader, tasks...)."""
    now = iso()
    message: Record = {
        "text": text, "author": "bot", "createdAt": now, "timestamp": now,
        "messageId": str(uuid.uuid4()), "requestId": request_id, "messageType": message_type,
        "offense": "None", "contentOrigin": origin, "privacy": None,
        "adaptiveCards": [{"type": "AdaptiveCard", "version": "1.0", "body": [
            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "isSubtle": True,
                                                   "italic": True, "text": text}]}]}],
    }
    if hidden is not None:
        message["hiddenText"] = hidden
    return message


def search_messages(query: str, sources: list[Source], request_id: str) -> list[Record]:
    """Return the InternalSearchQuery and InternalSearchResult messages of a search step."""
    results = {"web_search_results": [
        {"title": s.title, "snippets": [f"Emulated snippet for {s.title}."], "url": s.url}
        for s in sources]}
    query_msg = status_message("InternalSearchQuery", f"Searching the web for: `{query}`",
                               request_id, hidden=query)
    query_msg["invocation"] = f'search_web(query="{query}")'
    result_msg = status_message("InternalSearchResult", json.dumps(results), request_id,
                                hidden="```json\n" + json.dumps(results) + "\n```")
    result_msg["groundingInfo"] = results
    return [query_msg, result_msg]


def user_echo(arg: Record, offense: str = "None") -> Record:
    """Return the user message as echoed at the start of the final item."""
    raw = arg.get("message")
    msg: Record = raw if isinstance(raw, dict) else {}
    now = iso()
    return {"text": msg.get("text", ""), "author": "user", "from": {"id": _participant(arg)},
            "createdAt": now, "timestamp": msg.get("timestamp", now),
            "locale": msg.get("locale", "en-US"), "market": msg.get("market", "en-US"),
            "region": msg.get("region", "US"), "messageId": msg.get("messageId", str(uuid.uuid4())),
            "requestId": arg.get("requestId", ""), "offense": offense,
            "feedback": {"tag": None, "updatedOn": None, "type": "None"},
            "contentOrigin": "cib", "privacy": None,
            "inputMethod": msg.get("inputMethod", "Keyboard"),
            "messageType": msg.get("messageType", "Chat")}


def _participant(arg: Record) -> str | None:
    """Return ARG.participant.id if present."""
    participant = arg.get("participant")
    return participant.get("id") if isinstance(participant, dict) else None


def final_records(invocation_id: str, item: Record) -> list[Record]:
    """Return the type 2 final item followed by the type 3 completion."""
    return [{"type": 2, "invocationId": invocation_id, "item": item},
            {"type": 3, "invocationId": invocation_id}]


def success_item(meta: Record, messages: list[Record], throttling: Record) -> Record:
    """Return a Success final item; `meta` carries conversationId/requestId/expiry."""
    return {"messages": messages, "firstNewMessageIndex": 1, "defaultChatName": None,
            "conversationId": meta["conversationId"], "requestId": meta["requestId"],
            "conversationExpiryTime": meta["conversationExpiryTime"],
            "shouldInitiateConversation": True, "suggestedResponses": None,
            "telemetry": {"startTime": meta["startTime"]}, "throttling": throttling,
            "result": {"value": "Success", "message": None, "serviceVersion": SERVICE_VERSION}}


def error_item(conversation_id: str | None, request_id: str, value: str, message: str) -> Record:
    """Return a failure final item: no messages, only `result` says why."""
    result: Record = {"value": value, "message": message, "error": value,
                      "serviceVersion": SERVICE_VERSION}
    if value == "UnauthorizedRequest":
        result["renewCert"] = True
    return {"firstNewMessageIndex": None, "defaultChatName": None,
            "conversationId": conversation_id, "requestId": request_id,
            "telemetry": {"startTime": iso()}, "result": result}


def visible_text(record: Record | None) -> str | None:
    """Return the answer text carried by an update record, if it carries a bot answer."""
    if not record or record.get("type") != 1 or record.get("target") != "update":
        return None
    messages = (record.get("arguments") or [{}])[0].get("messages") or []
    if messages and messages[0].get("author") == "bot" and "messageType" not in messages[0]:
        return str(messages[0].get("text", ""))
    return None
