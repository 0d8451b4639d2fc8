"""Copilot's hashcash proof of work (PROTOCOL.md §7.3), solved within a time budget.

CPU-bound: callers run it in an executor thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import time

CHECK_EVERY = 4096  # iterations between clock reads


def parse_challenge(parameter: str) -> tuple[str, int] | None:
    """(prefix, difficulty) from `"<param>:<difficulty>"`; None when it is not that shape."""
    prefix, sep, difficulty = parameter.rpartition(":")
    if not sep or not prefix or not difficulty.isdigit() or int(difficulty) > 16:
        return None
    return prefix, int(difficulty)


def solve_hashcash(parameter: str, budget_seconds: float) -> str | None:
    """The counter `i` whose sha256("<param>:<i>") hex starts with `difficulty` zeros, or None when
    the challenge is malformed or not solved within `budget_seconds` (wall clock, so the CPU spent
    is bounded too)."""
    parsed = parse_challenge(parameter)
    if parsed is None:
        return None
    prefix, difficulty = parsed
    zeros = "0" * difficulty
    deadline = time.monotonic() + max(budget_seconds, 0.0)
    counter = 0
    while True:
        for candidate in range(counter, counter + CHECK_EVERY):
            if hashlib.sha256(f"{prefix}:{candidate}".encode()).hexdigest().startswith(zeros):
                return str(candidate)
        counter += CHECK_EVERY
        if time.monotonic() >= deadline:
            return None


def check_hashcash(parameter: str, token: str) -> bool:
    """Whether `token` solves the challenge `parameter` (what the server checks)."""
    parsed = parse_challenge(parameter)
    if parsed is None or not token.isdigit():
        return False
    prefix, difficulty = parsed
    return hashlib.sha256(f"{prefix}:{token}".encode()).hexdigest().startswith("0" * difficulty)
