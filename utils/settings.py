"""The one settings object, read once from the environment and an optional `.env` file."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CREATE_URL = "https://www.bing.com/turing/conversation/create"
DEFAULT_CHATHUB_URL = "wss://sydney.bing.com/sydney/ChatHub"
DEFAULT_WEB_URL = "https://www.bing.com"
DEFAULT_COPILOT_URL = "https://copilot.microsoft.com"
DEFAULT_COPILOT_WS_URL = "wss://copilot.microsoft.com/c/api/chat?api-version=2"


class Settings(BaseSettings):
    """Field names are the documented environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Upstream accounts and endpoints: one Cookie header, or a JSON file of accounts.
    bing_cookies: Annotated[str, Field(repr=False)] = ""
    bing_cookies_file: str | None = None
    bing_create_url: str = DEFAULT_CREATE_URL
    bing_chathub_url: str = DEFAULT_CHATHUB_URL
    bing_locale: str = "en-US"
    # The web host the image endpoints hang off: /images/kblob, /images/create, its polling and results.
    bing_web_url: str = DEFAULT_WEB_URL
    # permessage-deflate on the ChatHub socket, as browsers offer it (fewer bytes, more CPU).
    bing_ws_compression: bool = True
    # Create (and Copilot start) on the service's lean HTTP/1.1 transport; 0 uses httpx's default
    # one. Ignored when an outbound proxy is configured (the proxy path always uses httpx's own).
    lean_http: bool = True
    # The ChatHub and Copilot websockets on the service's own lean client (networks/ws_wire.py); 0
    # uses the websockets library. Ignored when an outbound proxy applies (websockets handles those).
    lean_ws: bool = True
    # Upstream proxy: BING_PROXY wins; otherwise the usual environment variables apply.
    bing_proxy: Annotated[str | None, Field(repr=False)] = None
    https_proxy: Annotated[str | None, Field(repr=False)] = None
    http_proxy: Annotated[str | None, Field(repr=False)] = None
    all_proxy: Annotated[str | None, Field(repr=False)] = None
    no_proxy: str | None = None

    # The Copilot upstream (PROTOCOL.md §7): one account from a token and/or browser cookies.
    copilot_url: str = DEFAULT_COPILOT_URL
    copilot_ws_url: str = DEFAULT_COPILOT_WS_URL
    copilot_access_token: Annotated[str, Field(repr=False)] = ""
    copilot_cookies: Annotated[str, Field(repr=False)] = ""
    # Copilot has no system slot: instructions, history and prompt share one first message.
    copilot_max_prompt_chars: int = 10000
    copilot_challenge_seconds: float = 5.0  # CPU budget for one hashcash proof of work
    copilot_followups_wait: float = 1.0  # how long to wait after `done` for suggested follow-ups

    # Who may call us, and how much.
    api_keys: Annotated[str, Field(repr=False)] = ""
    admin_key: Annotated[str, Field(repr=False)] = ""
    cors_origins: str = "*"
    max_body_bytes: int = 20_000_000  # room for a `data:` picture (MAX_IMAGE_BYTES, base64)
    max_messages: int = 500
    rate_limit_per_minute: int = 0  # per API key (or per client address when keys are off); 0 = off
    account_concurrency: int = 4
    account_max_rest: float = 0.0  # cap on how long a bad account rests before a probe; 0 = no cap
    failover_attempts: int = 3
    shutdown_grace_seconds: float = 10.0
    log_prompts: bool = False

    # Deadlines, in seconds.
    create_timeout: float = 15.0
    connect_timeout: float = 10.0
    upstream_idle_timeout: float = 60.0
    stream_hold_timeout: float = 20.0
    sse_ping_seconds: float = 15.0

    # Models and request policy.
    model_aliases: str = ""
    default_model: str = "balanced"
    max_prompt_chars: int = 4000
    max_context_chars: int = 32000
    inline_extras: str = ""
    throttle_retry_after: int = 3600

    # Conversation reuse: continue a Bing conversation when a request extends one we answered.
    continue_conversations: bool = True
    conversation_store_size: int = 1000
    conversation_store_ttl: float = 3 * 3600.0
    conversation_max_age: float = 5.5 * 3600.0  # Bing expires conversations after 6 h
    turn_limit_margin: int = 1
    # Conversations created ahead of need (0 disables), replaced when older than the max age.
    warm_pool_size: int = 1
    warm_pool_max_age: float = 3600.0
    warm_sockets: bool = True

    # Images (PROTOCOL.md §6): vision input and Image Creator.
    max_image_bytes: int = 10_000_000  # an input image (decoded) or a fetched one, at most
    image_max_pixels: int = 1_000_000  # larger input images are downscaled before upload
    image_fetch_urls: bool = True  # fetch http(s) image_url parts; 0 accepts only data: URLs
    image_fetch_timeout: float = 10.0
    image_create_timeout: float = 240.0  # Image Creator: from the request until the images are ready
    image_poll_interval: float = 2.0

    # Shared state for several workers or replicas (utils/redis_client.py); unset = in-process memory.
    redis_url: Annotated[str | None, Field(repr=False)] = None  # may carry a password
    redis_connect_timeout: float = 0.5
    redis_socket_timeout: float = 0.5
    redis_probe_seconds: float = 1.0  # how often Redis is pinged (and re-tried while it is down)
    redis_key_prefix: str = "bingchat:"
    account_lease_seconds: float = 30.0  # a crashed instance's turn slots free themselves after this

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # one JSON object per log line with `json`
    # Serve answers from the built-in Bing emulator instead of Bing (also `--demo`).
    demo: bool = False

    @property
    def api_key_list(self) -> list[str]:
        """Configured API keys; empty means the service is open."""
        return split_list(self.api_keys)

    @property
    def alias_map(self) -> dict[str, str]:
        """MODEL_ALIASES parsed as {alias: model id}."""
        pairs = (item.split("=", 1) for item in split_list(self.model_aliases) if "=" in item)
        return {alias.strip(): target.strip() for alias, target in pairs}

    @property
    def inline_extra_set(self) -> frozenset[str]:
        """INLINE_EXTRAS parsed: a subset of search, sources, suggestions."""
        return frozenset(split_list(self.inline_extras))

    @property
    def web_base(self) -> str:
        """BING_WEB_URL without a trailing slash."""
        return self.bing_web_url.rstrip("/")

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS parsed; `*` allows every origin."""
        return split_list(self.cors_origins) or ["*"]


def split_list(value: str) -> list[str]:
    """Split a comma-separated setting into its non-empty, stripped items."""
    return [item.strip() for item in value.split(",") if item.strip()]


@lru_cache
def get_settings() -> Settings:
    """Read the settings once per process; tests pass their own `Settings` instead."""
    return Settings()
