"""The application factory: routes, error envelopes, CORS, and the upstream clients' lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from apis import __version__
from apis.errors import CatchAll, install_error_handlers
from apis.health import HealthRecord
from apis.middleware import NormalizePath
from apis.routes import openai_router, service_router
from conversations.pool import WarmPool
from conversations.threads import MemoryStore
from conversations.turn import Upstream, create_session
from networks.http_client import make_http_client
from utils.settings import Settings, get_settings

PREFIXES = ("/v1", "", "/api", "/api/v1")
DESCRIPTION = (
    "OpenAI-compatible chat completions over Bing Chat. Point any OpenAI client's base URL at "
    "`http://<host>:22222/v1`. Models: precise, balanced, creative, and their `-offline` variants."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready app; `settings.demo` serves answers from the built-in Bing emulator."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Bing Chat API", version=__version__, description=DESCRIPTION, lifespan=lifespan(settings)
    )
    install_error_handlers(app)
    for prefix in PREFIXES:
        app.include_router(openai_router, prefix=prefix, include_in_schema=prefix == "/v1")
    app.include_router(service_router)
    app.add_middleware(CatchAll)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],  # echoes the requested headers, which covers Authorization
        expose_headers=["Retry-After", "x-should-retry"],
    )
    app.add_middleware(NormalizePath)
    return app


def lifespan(settings: Settings):  # type: ignore[no-untyped-def]
    """Open the shared HTTP client (and the demo emulator) for the app's lifetime."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            live = await start_demo(stack, settings) if settings.demo else settings
            http = await stack.enter_async_context(make_http_client(live))
            store = MemoryStore(live.conversation_store_size, live.conversation_store_ttl)
            upstream = Upstream(live, http, store)
            upstream = replace(upstream, pool=start_pool(stack, upstream))
            app.state.settings = live
            app.state.upstream = upstream
            app.state.health = HealthRecord()
            yield

    return run


def start_pool(stack: AsyncExitStack, upstream: Upstream) -> WarmPool | None:
    """The warm pool of pre-created conversations, running until the app stops (None when disabled)."""
    settings = upstream.settings
    if settings.warm_pool_size <= 0:
        return None
    pool = WarmPool(lambda: create_session(upstream), settings.warm_pool_size, settings.warm_pool_max_age)
    pool.start()
    stack.push_async_callback(pool.stop)
    return pool


async def start_demo(stack: AsyncExitStack, settings: Settings) -> Settings:
    """Start the emulator on a loopback port and point the settings at it."""
    from emulator import BingEmulator  # only the demo needs it

    emulator = await stack.enter_async_context(BingEmulator(host="127.0.0.1", port=0))
    return settings.model_copy(
        update={
            "bing_create_url": emulator.create_url,
            "bing_chathub_url": emulator.chathub_url,
            "bing_cookies": "",
            "bing_proxy": None,
        }
    )
