"""What /health reports: the upstream in use and its latest outcome (never a cookie or key)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from utils.settings import Settings


@dataclass(slots=True)
class HealthRecord:
    """The latest upstream outcomes, updated by the routes."""

    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure_code: str | None = None

    def record_success(self) -> None:
        """An answer was delivered."""
        self.last_success_at = time.time()

    def record_failure(self, code: str) -> None:
        """An upstream failure reached a client."""
        self.last_failure_at, self.last_failure_code = time.time(), code


def health_report(settings: Settings, record: HealthRecord, version: str) -> dict[str, Any]:
    """The /health body."""
    return {
        "status": "ok",
        "version": version,
        "upstream": {
            "create_host": urlsplit(settings.bing_create_url).netloc,
            "chathub_host": urlsplit(settings.bing_chathub_url).netloc,
            "account": "signed-in cookies" if settings.bing_cookies else "anonymous",
            "demo": settings.demo,
        },
        "last_success_at": record.last_success_at,
        "last_failure": (
            {"code": record.last_failure_code, "at": record.last_failure_at}
            if record.last_failure_code
            else None
        ),
    }
