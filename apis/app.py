"""The application factory: routes, error envelopes, CORS, and the upstream clients' lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from apis import __version__
from apis.chat_route import ChatFastPath
from apis.errors import CatchAll, install_error_handlers
from apis.health import HealthRecord
from apis.images import images_router
from apis.limits import RequestLimits
from apis.middleware import NormalizePath
from apis.operator import install_operator_views
from apis.requestlog import RequestLog
from apis.routes import openai_router, service_router
from apis.shared_limits import SharedRateLimiter
from apis.shutdown import Draining
from conversations.account_file import AccountSource, AccountWatcher
from conversations.accounts import Account, AccountPool
from conversations.shared_accounts import SharedAccountPool
from conversations.shared_store import RedisStore
from conversations.threads import ConversationStore, MemoryStore
from conversations.turn import Upstream, start_warm_pool
from networks.http_client import make_http_client
from networks.ws_wire import finish_closes
from utils.heap import settle_heap
from utils.redis_client import SharedRedis
from utils.settings import Settings, get_settings

PREFIXES = ("/v1", "", "/api", "/api/v1")
DESCRIPTION = (
    "OpenAI-compatible chat completions over Bing Chat and Microsoft Copilot. Point any OpenAI "
    "client's base URL at `http://<host>:22222/v1`. Models: precise, balanced, creative, and their "
    "`-offline` variants (Bing); copilot, copilot-reasoning and copilot-smart (Copilot)."
)


def create_app(settings: Settings | None = None, *, own_process: bool = False) -> FastAPI:
    """A ready app; `settings.demo` serves answers from the built-in Bing emulator. An app that owns
    its process (the command line's) tunes the garbage collector once started (utils/heap.py)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Bing Chat API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan(settings, own_process),
        # FastAPI's OpenTelemetry hooks otherwise look up the tracer providers on every request;
        # the service has its own metrics (/metrics) and request log.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    for prefix in PREFIXES:
        app.include_router(openai_router, prefix=prefix, include_in_schema=prefix == "/v1")
        app.include_router(images_router, prefix=prefix, include_in_schema=prefix == "/v1")
    app.include_router(service_router)
    install_operator_views(app)  # the page at /, /status, /metrics (apis/operator.py)
    app.add_middleware(ChatFastPath, prefixes=PREFIXES)  # innermost: plain chat requests (apis/chat_route.py)
    app.add_middleware(CatchAll)
    app.add_middleware(Draining, settings=settings)  # SHUTDOWN_GRACE_SECONDS, then 503 (apis/shutdown.py)
    app.add_middleware(RequestLimits, settings=settings)  # 413 and this service's 429 (apis/limits.py)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],  # echoes the requested headers, which covers Authorization
        expose_headers=["Retry-After", "x-should-retry", "X-Request-ID"],
    )
    app.add_middleware(RequestLog, recent=app.state.recent)  # one line per request (apis/requestlog.py)
    app.add_middleware(NormalizePath)
    return app


def lifespan(settings: Settings, own_process: bool = False):  # type: ignore[no-untyped-def]
    """Open the shared HTTP client, the accounts (and the demo emulator) for the app's lifetime."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            live = await start_demo(stack, settings) if settings.demo else settings
            stack.push_async_callback(finish_closes)  # last: sockets' clean closes still under way
            http = await stack.enter_async_context(make_http_client(live))
            shared = await open_shared(stack, live)
            upstream = open_upstream(live, http, shared)
            stack.push_async_callback(stop_warm_pools, upstream)
            app.state.shared = shared
            app.state.shared_limiter = SharedRateLimiter(shared) if shared is not None else None
            app.state.settings = live
            app.state.upstream = upstream
            app.state.health = HealthRecord()
            if own_process:
                settle_heap()
            yield

    return run


def open_upstream(settings: Settings, http: httpx.AsyncClient, shared: SharedRedis | None = None) -> Upstream:
    """Accounts (BING_COOKIES or the accounts file, which must parse, plus COPILOT_*), their warm
    pools, the store; shared through Redis when `shared` is given (REDIS_URL), else in this process."""
    source = AccountSource(
        settings.bing_cookies,
        settings.bing_cookies_file,
        settings.copilot_cookies,
        settings.copilot_access_token,
    )
    accounts = open_accounts(settings, source.load(), shared)
    watcher = AccountWatcher(source, accounts) if settings.bing_cookies_file else None
    size, ttl = settings.conversation_store_size, settings.conversation_store_ttl
    store: ConversationStore = MemoryStore(size, ttl)
    if shared is not None:
        store = RedisStore(shared, size, ttl, accounts)
    upstream = Upstream(settings, http, store, accounts, watcher)
    for account in accounts.accounts.values():
        start_warm_pool(upstream, account)
    return upstream


def open_accounts(settings: Settings, accounts: list[Account], shared: SharedRedis | None) -> AccountPool:
    """The account pool: in-process, or with health and concurrency shared through Redis."""
    if shared is None:
        return AccountPool(accounts, settings.account_concurrency, settings.account_max_rest)
    lease = settings.account_lease_seconds
    pool = SharedAccountPool(accounts, settings.account_concurrency, shared, lease, settings.account_max_rest)
    pool.start()
    return pool


async def open_shared(stack: AsyncExitStack, settings: Settings) -> SharedRedis | None:
    """The Redis connection when REDIS_URL is set (down at start is fine: it is probed until it answers)."""
    if not settings.redis_url:
        return None
    shared = SharedRedis(settings)
    stack.push_async_callback(shared.close)
    await shared.start()
    return shared


async def stop_warm_pools(upstream: Upstream) -> None:
    """Stop every account's background pool and close the sockets opened ahead."""
    for account in upstream.accounts.accounts.values():
        if account.pool is not None:
            await account.pool.stop()
    await upstream.sockets.close_all()
    if isinstance(upstream.accounts, SharedAccountPool):
        await upstream.accounts.stop()


async def start_demo(stack: AsyncExitStack, settings: Settings) -> Settings:
    """Start the emulator on a loopback port and point the settings at it."""
    from emulator import BingEmulator  # only the demo needs it

    emulator = await stack.enter_async_context(BingEmulator(host="127.0.0.1", port=0))
    return settings.model_copy(
        update={
            "bing_create_url": emulator.create_url,
            "bing_chathub_url": emulator.chathub_url,
            "bing_web_url": emulator.web_url,
            "bing_cookies": "_U=emulator-demo",  # signed in, so the demo can draw (Image Creator)
            "copilot_url": emulator.copilot_url,
            "copilot_ws_url": emulator.copilot_ws_url,
            "copilot_cookies": "__Host-copilot-anon=demo",  # the emulator's anonymous Copilot user
            "copilot_access_token": "",
            "bing_cookies_file": None,  # the demo's accounts are the emulator's, whatever is mounted
            "bing_proxy": None,
            "account_max_rest": 3.0,  # a fault tried in the demo must not bench its only account
        }
    )
