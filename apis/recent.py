"""The last few minutes of chat requests, in memory, for the status page (never prompts or keys)."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

WINDOW_SECONDS = 15 * 60
BUCKET_SECONDS = 60
LATEST = 20


class RecentRequests:
    """Counts by status, error code and model over WINDOW_SECONDS, in one-minute buckets, plus the
    latest few requests' summaries."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._buckets: deque[tuple[int, Counter[tuple[str, str]]]] = deque()
        self._latest: deque[dict[str, Any]] = deque(maxlen=LATEST)

    def add(self, summary: dict[str, Any], now: float | None = None) -> None:
        """Count one finished request; `summary` holds its log fields."""
        now = time.time() if now is None else now
        minute = int(now // BUCKET_SECONDS)
        if not self._buckets or self._buckets[-1][0] != minute:
            self._buckets.append((minute, Counter()))
        counts = self._buckets[-1][1]
        counts["status", str(summary.get("status"))] += 1
        counts["model", str(summary.get("model") or "none")] += 1
        if summary.get("error"):
            counts["error", str(summary["error"])] += 1
        self._latest.appendleft({"at": now, **summary})
        self._prune(now)

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Totals over the window, by status, by error code and by model, and the latest requests."""
        now = time.time() if now is None else now
        self._prune(now)
        total: Counter[tuple[str, str]] = Counter()
        for _, counts in self._buckets:
            total.update(counts)
        by = {kind: {key: n for (k, key), n in sorted(total.items()) if k == kind} for kind in KINDS}
        return {
            "window_seconds": self.window,
            "total": sum(by["status"].values()),
            "by_status": by["status"],
            "by_error": by["error"],
            "by_model": by["model"],
            "latest": [entry for entry in self._latest if now - entry["at"] < self.window],
        }

    def _prune(self, now: float) -> None:
        oldest = int((now - self.window) // BUCKET_SECONDS)
        while self._buckets and self._buckets[0][0] < oldest:  # minute buckets: the window is ±1 min
            self._buckets.popleft()


KINDS = ("status", "error", "model")
