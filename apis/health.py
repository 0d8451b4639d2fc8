"""What /health reports: the upstream in use and its latest outcome (never a cookie or key)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from conversations.accounts import AccountPool
from utils.redis_client import SharedRedis
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


def health_report(
    settings: Settings,
    record: HealthRecord,
    version: str,
    accounts: AccountPool,
    shared: SharedRedis | None = None,
) -> dict[str, Any]:
    """The /health body: `ok` while some account can serve (and Redis answers, when configured),
    `degraded` otherwise, with the reasons."""
    views = accounts.public_view()
    states = Counter(view["state"] for view in views)
    usable = sum(1 for view in views if view["usable"])
    reasons = [] if usable else ["no account can serve"]
    if shared is not None and not shared.up:
        reasons.append(f"redis unreachable ({shared.reason}): fresh conversations and local state only")
    return {
        "status": "degraded" if reasons else "ok",
        "reasons": reasons,
        "shared_state": shared.status() if shared is not None else {"backend": "memory"},
        "version": version,
        "upstream": {
            "create_host": urlsplit(settings.bing_create_url).netloc,
            "chathub_host": urlsplit(settings.bing_chathub_url).netloc,
            "web_host": urlsplit(settings.bing_web_url).netloc,
            "copilot_host": urlsplit(settings.copilot_url).netloc,
            "copilot_ws_host": urlsplit(settings.copilot_ws_url).netloc,
            "demo": settings.demo,
        },
        "accounts": {"total": len(views), "usable": usable, "states": dict(states)},
        "upstreams": {  # which models can answer: the accounts of each upstream
            name: {
                "accounts": sum(1 for view in views if view["upstream"] == name),
                "usable": sum(1 for view in views if view["upstream"] == name and view["usable"]),
            }
            for name in ("bing", "copilot")
        },
        "last_success_at": record.last_success_at,
        "last_failure": (
            {"code": record.last_failure_code, "at": record.last_failure_at}
            if record.last_failure_code
            else None
        ),
    }
