"""ChatHub framing (SignalR JSON hub protocol): records end with 0x1E; parse them into events."""

from __future__ import annotations

from typing import Any

import orjson

from messagers.events import (
    BotText,
    Final,
    Ignored,
    InvocationEnd,
    Ping,
    SearchQuery,
    ServerClosed,
    Source,
    Throttling,
    UpstreamEvent,
)

RS = "\x1e"
RS_BYTE = b"\x1e"
_ANSWER_TYPES = (None, "Chat")


def encode_record(record: dict[str, Any]) -> str:
    """One record in wire form: compact JSON plus the record separator."""
    return orjson.dumps(record).decode() + RS


def split_records(raw: str | bytes) -> list[Any]:
    """The JSON records in one websocket message; unparsable pieces become None.

    Works on bytes through a memoryview: Bing repeats the whole answer in every update, so a long
    answer is megabytes of frames, and copying them would cost more than parsing them.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    view, records, start, size = memoryview(data), [], 0, len(data)
    while start < size:
        end = data.find(RS_BYTE, start)
        end = size if end < 0 else end
        if end > start:
            try:
                records.append(orjson.loads(view[start:end]))
            except orjson.JSONDecodeError:
                if bytes(view[start:end]).strip():
                    records.append(None)
        start = end + 1
    return records


def parse_message(raw: str | bytes) -> list[UpstreamEvent]:
    """All events in one websocket message."""
    events: list[UpstreamEvent] = []
    for record in split_records(raw):
        events.extend(parse_record(record))
    return events


def parse_record(record: Any) -> list[UpstreamEvent]:
    """The events in one record; unknown shapes are `Ignored`, never an exception."""
    if not isinstance(record, dict):
        return [Ignored("malformed record")]
    kind = record.get("type")
    if kind == 1:
        return parse_update(record)
    if kind == 2:
        return [parse_final(record.get("item"))]
    if kind == 3:
        return [InvocationEnd(_text(record.get("error")) or None)]
    if kind == 6:
        return [Ping()]
    if kind == 7 or record.get("error"):
        return [ServerClosed(_text(record.get("error")) or "connection closed")]
    return [Ignored(f"record type {kind!r}")]


def parse_update(record: dict[str, Any]) -> list[UpstreamEvent]:
    """A type 1 record: throttling info and/or streaming bot messages."""
    if record.get("target") != "update":
        return [Ignored(f"target {record.get('target')!r}")]
    events: list[UpstreamEvent] = []
    for argument in _dicts(record.get("arguments")):
        throttling = parse_throttling(argument.get("throttling"))
        if throttling is not None:
            events.append(throttling)
        events.extend(parse_bot_message(m) for m in _dicts(argument.get("messages")))
    return events


def parse_bot_message(message: dict[str, Any]) -> UpstreamEvent:
    """One message of an update: answer text, a search step, or something ignored."""
    if message.get("author") != "bot":
        return Ignored("non-bot message")
    message_type = message.get("messageType")
    if message_type == "InternalSearchQuery":
        return SearchQuery(_text(message.get("hiddenText")) or _text(message.get("text")))
    answer = parse_answer(message)
    return answer if answer is not None else Ignored(f"messageType {message_type!r}")


def parse_answer(message: dict[str, Any]) -> BotText | None:
    """The message as visible answer text, or None when it is not one."""
    message_type = message.get("messageType")
    if message_type not in _ANSWER_TYPES and message_type != "Disengaged":
        return None
    if message.get("contentType") not in (None, "", "Text"):
        return None
    origin = "Disengaged" if message_type == "Disengaged" else _text(message.get("contentOrigin"))
    return BotText(_text(message.get("messageId")), _text(message.get("text")), origin or "DeepLeo")


def parse_final(item: Any) -> Final:
    """A type 2 item; on failure only `result` is meaningful."""
    item = item if isinstance(item, dict) else {}
    result = item.get("result")
    result = result if isinstance(result, dict) else {}
    bot = [m for m in _dicts(item.get("messages")) if m.get("author") == "bot"]
    # The answer is usually the last bot message, but walk back past images and the like.
    with_answer: dict[str, Any] = next((m for m in reversed(bot) if parse_answer(m) is not None), {})
    answer = parse_answer(with_answer) if with_answer else None
    queries = tuple(
        _text(m.get("hiddenText")) or _text(m.get("text"))
        for m in bot
        if m.get("messageType") == "InternalSearchQuery"
    )
    return Final(
        image_prompts=image_prompts(bot),
        value=_text(result.get("value")) or "Missing",
        message=_text(result.get("message")),
        answer=answer,
        sources=parse_sources(with_answer.get("sourceAttributions")),
        suggestions=tuple(_text(s.get("text")) for s in _dicts(with_answer.get("suggestedResponses"))),
        queries=queries,
        throttling=parse_throttling(item.get("throttling")),
    )


def image_prompts(bot: list[dict[str, Any]]) -> tuple[str, ...]:
    """The prompts of `GenerateContentQuery` messages asking for an image (not music, not empty)."""
    return tuple(
        _text(m.get("text")).strip()
        for m in bot
        if m.get("messageType") == "GenerateContentQuery"
        and _text(m.get("contentType")).upper() == "IMAGE"
        and _text(m.get("text")).strip()
    )


def parse_sources(value: Any) -> tuple[Source, ...]:
    """`sourceAttributions` as (title, url) pairs, skipping entries with no URL."""
    return tuple(
        Source(_text(s.get("providerDisplayName")) or _text(s.get("seeMoreUrl")), _text(s.get("seeMoreUrl")))
        for s in _dicts(value)
        if s.get("seeMoreUrl")
    )


def parse_throttling(value: Any) -> Throttling | None:
    """The turn counters, when present and numeric."""
    if not isinstance(value, dict):
        return None
    used, limit = value.get("numUserMessagesInConversation"), value.get("maxNumUserMessagesInConversation")
    if isinstance(used, int) and isinstance(limit, int):
        return Throttling(used, limit)
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
