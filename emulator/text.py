"""Deterministic answer text, search sources and cumulative prefixes (pure functions)."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from urllib.parse import quote

from .faults import strip_directives

APOLOGY_TEXT = ("Sorry! That\u2019s on me, I can\u2019t give a response to that right now. "
                "What else can I help you with?")
TURN_LIMIT_TEXT = ("Thanks for this conversation! I've reached my limit, "
                   "will you hit \u201cNew topic,\u201d please?")
DISENGAGED_TEXT = ("I\u2019m sorry but I prefer not to continue this conversation. I\u2019m still "
                   "learning so I appreciate your understanding and patience.\U0001f64f")
SUGGESTIONS = ("Tell me more about the emulator.", "How does the Bing Chat API emulator work?",
               "Can you give me a shorter answer?")

_FILLER_TEXT = (
    "emulated answers keep the proxy honest while the real service stays out of reach and every "
    "stream arrives over a loopback socket so tests can watch each cumulative update grow word by "
    "word until the final item closes the turn with a completion record and the client hangs up "
    "politely after reading suggested responses source attributions throttling counters and "
    "citation markers that point at example pages"
)
_FILLER = _FILLER_TEXT.split()
_TOKEN = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Source:
    """One fake web search result."""

    title: str
    url: str
    query: str


def _rng(prompt: str) -> random.Random:
    """Return a Random seeded by the prompt so answers are repeatable."""
    return random.Random(hashlib.sha256(prompt.encode("utf-8", "replace")).digest())


def search_query(prompt: str) -> str:
    """Return the web query the emulator pretends to run for a prompt."""
    words = strip_directives(prompt).split()[:8]
    return " ".join(words) or "Bing Chat API emulator"


def sources_for(prompt: str, count: int = 3) -> list[Source]:
    """Return example.com-style search results for a prompt."""
    query = search_query(prompt)
    hosts = ("example.com", "example.org", "example.net")
    return [Source(title=f"Emulator result {i + 1}: {query[:60]}",
                   url=f"https://{hosts[i % 3]}/emulator/result-{i + 1}?q={quote(query[:60])}",
                   query=query) for i in range(count)]


def answer_text(prompt: str, tone: str, search: bool, context_chars: int, words: int,
                n_sources: int = 3, image: str | None = None) -> str:
    """Compose the visible answer: an emulator notice, the prompt echo (and the picture shown),
    then filler words."""
    asked = " ".join(prompt.split())[:200].rstrip(".")
    header = [
        "This answer comes from the Bing Chat API emulator, not from Bing.",
        f"Tone: {tone}; web search: {'on' if search else 'off'}; "
        f"context: {context_chars} characters.",
        f"You asked: {asked}.",
    ]
    if image:
        header.append(f"You showed me a {image}.")
    sentences = [s.split() for s in header]
    rng = _rng(prompt)
    remaining = words - sum(len(s) for s in sentences)
    while remaining > 0:
        size = min(remaining, rng.randint(6, 14))
        sentence = [rng.choice(_FILLER) for _ in range(size)]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        sentences.append(sentence)
        remaining -= size
    if search:
        _cite(sentences, n_sources)
    return " ".join(" ".join(s) for s in sentences)


def _cite(sentences: list[list[str]], n_sources: int) -> None:
    """Attach `[^n^]` markers before the final period of sentences, cycling through sources."""
    targets = [0, *range(3, len(sentences))]
    if len(targets) == 1:
        targets.append(len(sentences) - 1)
    for k, index in enumerate(targets):
        marker = f"[^{k % n_sources + 1}^]"
        last = sentences[index][-1]
        sentences[index][-1] = last[:-1] + marker + "." if last.endswith(".") else last + marker


def prefixes(text: str, per_update: int) -> list[str]:
    """Return the cumulative texts to stream: growing by `per_update` words, ending with `text`."""
    tokens = _TOKEN.findall(text)
    out = ["".join(tokens[:end]).rstrip() for end in range(per_update, len(tokens), per_update)]
    out.append(text)
    return [p for p in out if p]


def cited(text: str, sources: list[Source]) -> list[Source]:
    """Return the sources whose `[^n^]` marker appears in `text`."""
    return [s for i, s in enumerate(sources) if f"[^{i + 1}^]" in text]


def card_text(text: str, sources: list[Source]) -> str:
    """Return the adaptive-card text: reference-link lines for cited sources, then the text."""
    refs = [f'[{i + 1}]: {s.url} "{s.title}"' for i, s in enumerate(sources)
            if f"[^{i + 1}^]" in text]
    return "\n".join(refs) + "\n\n" + text if refs else text
