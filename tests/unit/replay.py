"""Replays recorded ChatHub messages through the pure translators."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from messagers.answer import advance, start_answer
from messagers.events import AnswerEvent, AnswerOptions, ContentDelta, Finished, UpstreamFailure
from messagers.frames import parse_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@dataclass
class Replay:
    content: str = ""
    events: list[AnswerEvent] = field(default_factory=list)
    finished: Finished | None = None
    failure: UpstreamFailure | None = None


def load(name: str) -> list[str]:
    """The raw websocket messages of one recording."""
    lines = (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def replay(name: str, inline: frozenset[str] = frozenset()) -> Replay:
    """Run a recording to its end (or the state's end) and gather what the client would get."""
    state = start_answer(AnswerOptions(inline=inline))
    result = Replay()
    for raw in load(name):
        for event in parse_message(raw):
            state, out = advance(state, event)
            result.events += out
    for event in result.events:
        if isinstance(event, ContentDelta):
            result.content += event.text
        elif isinstance(event, Finished):
            result.finished = event
        elif isinstance(event, UpstreamFailure):
            result.failure = event
    return result
