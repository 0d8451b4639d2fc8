"""The operator's views: the status page and playground at `/`, `GET /status` (its JSON), `GET /metrics`.

`/status` and `/metrics` follow API_KEYS: open when it is empty, otherwise they need one of its keys
(or ADMIN_KEY) as `Authorization: Bearer <key>`. They show account names and states, never cookies;
the full per-account detail stays behind ADMIN_KEY at `GET /v1/accounts`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apis import __version__
from apis.auth import supplied_key
from apis.health import health_report
from apis.recent import RecentRequests
from conversations.accounts import AccountPool, AccountState
from conversations.turn import Upstream
from utils.errors import InvalidApiKey
from utils.metrics import REGISTRY
from utils.redis_client import SharedRedis

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    # The page loads only its own script and style, and talks only to this service.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}
operator_router = APIRouter()


async def require_operator_key(request: Request) -> None:
    """Open when API_KEYS is empty; otherwise one of its keys, or ADMIN_KEY, is needed."""
    settings = request.app.state.settings
    allowed = [*settings.api_key_list, *([settings.admin_key] if settings.admin_key else [])]
    if not settings.api_key_list:
        return
    key = supplied_key(request).encode()
    if not any(hmac.compare_digest(key, candidate.encode()) for candidate in allowed):
        raise InvalidApiKey(
            "This view needs an API key (from API_KEYS) or the admin key as `Authorization: Bearer <key>`."
        )


@operator_router.get("/", include_in_schema=False, response_model=None)
async def page(request: Request) -> Response:
    """The status page and playground for browsers; where to point a client for everything else."""
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {"service": "Bing Chat API", "version": __version__, "base_url": f"{base}/v1", "docs": f"{base}/docs"}
    )


@operator_router.get("/status", dependencies=[Depends(require_operator_key)])
async def status(request: Request) -> dict[str, Any]:
    """What the page shows: version, upstream, each account's state and re-probe time, recent requests."""
    upstream: Upstream = request.app.state.upstream
    await upstream.refresh_accounts()
    await upstream.accounts.sync()  # the states other instances shared (Redis)
    settings = upstream.settings
    shared = getattr(request.app.state, "shared", None)
    report = health_report(settings, request.app.state.health, __version__, upstream.accounts, shared)
    now = time.time()
    recent: RecentRequests = request.app.state.recent
    return {
        "service": "Bing Chat API",
        "version": __version__,
        "status": report["status"],
        "reasons": report["reasons"],
        "shared_state": report["shared_state"],
        "upstream": report["upstream"],
        "uptime_seconds": round(time.monotonic() - request.app.state.started, 1),
        "auth": {"api_keys": bool(settings.api_key_list), "admin_view": bool(settings.admin_key)},
        "accounts": [account_status(view, now) for view in upstream.accounts.public_view()],
        "last_failure": report["last_failure"],
        "recent": recent.summary(now),
    }


def account_status(view: dict[str, Any], now: float) -> dict[str, Any]:
    """An account as the page shows it: name, upstream, state, and when a resting one is tried again."""
    retry_at = view["retry_at"]
    return {
        "name": view["name"],
        "upstream": view.get("upstream", "bing"),
        "state": view["state"],
        "usable": view["usable"],
        "retry_at": retry_at,
        "retry_in": max(round(retry_at - now), 0) if retry_at else None,
    }


@operator_router.get("/metrics", dependencies=[Depends(require_operator_key)], include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: the process-wide instruments, then this app's accounts."""
    await request.app.state.upstream.accounts.sync()  # the states other instances shared (Redis)
    accounts = CollectorRegistry(auto_describe=False)
    accounts.register(AccountStates(request.app.state.upstream.accounts))
    shared = getattr(request.app.state, "shared", None)
    if shared is not None:
        accounts.register(SharedStateUp(shared))
    body = generate_latest(REGISTRY) + generate_latest(accounts)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


class AccountStates(Collector):
    """Read at scrape time: each account's state (1 for the current one), turns in flight, usable count."""

    def __init__(self, pool: AccountPool) -> None:
        self.pool = pool

    def collect(self) -> Iterable[Metric]:
        """The account gauges, from the pool's public view."""
        state = GaugeMetricFamily(
            "bingapi_account_state",
            "1 for the account's current state, 0 for the others.",
            labels=["account", "state"],
        )
        in_flight = GaugeMetricFamily(
            "bingapi_account_in_flight", "Turns running on the account now.", labels=["account"]
        )
        views = self.pool.public_view()
        for view in views:
            for option in AccountState:
                state.add_metric([view["name"], option.value], 1.0 if view["state"] == option.value else 0.0)
            in_flight.add_metric([view["name"]], float(view["in_flight"]))
        usable = GaugeMetricFamily("bingapi_accounts_usable", "Accounts that can serve a turn now.")
        usable.add_metric([], float(sum(1 for view in views if view["usable"])))
        return [state, in_flight, usable]


class SharedStateUp(Collector):
    """Read at scrape time: whether Redis (REDIS_URL) answers; absent without it."""

    def __init__(self, shared: SharedRedis) -> None:
        self.shared = shared

    def collect(self) -> Iterable[Metric]:
        """1 while the shared state is usable, 0 while this process works alone."""
        up = GaugeMetricFamily(
            "bingapi_shared_state_up", "1 while Redis answers (REDIS_URL); 0 while this process works alone."
        )
        up.add_metric([], 1.0 if self.shared.up else 0.0)
        return [up]


def install_operator_views(app: FastAPI) -> None:
    """Mount the page's assets and the operator routes; keep the recent-requests window on the app."""
    app.state.recent = RecentRequests()
    app.state.started = time.monotonic()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(operator_router)
