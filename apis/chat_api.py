"""`python -m apis.chat_api`: serve the API (on 0.0.0.0:22222 unless told otherwise)."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from apis.app import create_app
from utils.logging import setup_logging
from utils.settings import Settings, get_settings

log = logging.getLogger("apis.chat_api")
GRACE_MARGIN_SECONDS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: host, port, reload, demo, workers."""
    parser = argparse.ArgumentParser(prog="python -m apis.chat_api", description=__doc__)
    parser.add_argument("-s", "--server", "--host", dest="host", default="0.0.0.0", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=22222, help="port to listen on")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    parser.add_argument("--demo", action="store_true", help="answer from the built-in Bing emulator")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes; more than 1 needs REDIS_URL (shared state)"
    )
    return parser.parse_args(argv)


def workers_problem(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why the requested worker count cannot run, or None."""
    if args.workers < 1:
        return "--workers must be at least 1."
    if args.workers == 1:
        return None
    if not settings.redis_url:
        return (
            f"--workers {args.workers} needs shared state: set REDIS_URL (for example "
            "redis://127.0.0.1:6379/0). Without it, each worker would keep its own conversations, "
            "account health and rate limits: a chat's next turn would start over on another worker, "
            "and an account one worker found throttled would be tried again by the others."
        )
    if args.demo or settings.demo:
        return "--workers cannot be combined with the demo (each worker would run its own emulator)."
    if args.reload:
        return "--workers cannot be combined with --reload."
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until interrupted."""
    args = parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    problem = workers_problem(args, settings)
    if problem is not None:
        log.error("%s", problem)
        raise SystemExit(2)
    if args.demo:
        settings = settings.model_copy(update={"demo": True})
        log.info("demo mode: answers come from the built-in Bing emulator, not from Bing")
    settings = check_accounts_file(settings)
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
        # Our own line per request (apis/requestlog.py) replaces uvicorn's access log, and uvicorn's
        # messages go through the root handler, so LOG_FORMAT=json covers them too.
        "access_log": False,
        "log_config": None,
        # uvicorn's hard stop comes after our grace period, so cut streams can say goodbye first.
        "timeout_graceful_shutdown": graceful_timeout(settings.shutdown_grace_seconds),
    }
    if args.reload:
        if args.demo:
            log.info("with --reload, set DEMO=1 in the environment for demo mode")
        uvicorn.run("apis.app:create_app", factory=True, reload=True, **common)
    elif args.workers > 1:  # each worker builds its app from the environment, sharing state in Redis
        log.info("starting %d workers sharing state through Redis", args.workers)
        uvicorn.run("apis.chat_api:worker_app", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(create_app(settings, own_process=True), **common)


def worker_app() -> FastAPI:
    """The app of one `--workers` process: settings from the environment, and its own logging set-up
    (a spawned worker does not inherit the parent's)."""
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    return create_app(check_accounts_file(settings), own_process=True)  # the same fallback as the parent's


def check_accounts_file(settings: Settings) -> Settings:
    """When BING_COOKIES_FILE names a missing file: fall back to BING_COOKIES / COPILOT_* if they are
    set (with a warning: the image's default file may simply not be mounted), else exit with a plain
    message rather than a traceback."""
    path = settings.bing_cookies_file
    if not path or settings.demo or Path(path).is_file():
        return settings
    if settings.bing_cookies or settings.copilot_cookies or settings.copilot_access_token:
        log.warning("BING_COOKIES_FILE=%s does not exist: using BING_COOKIES / COPILOT_* instead", path)
        return settings.model_copy(update={"bing_cookies_file": None})
    log.error(
        "BING_COOKIES_FILE=%s does not exist: mount the accounts file there (see README, Deployment), "
        "or set BING_COOKIES (or COPILOT_ACCESS_TOKEN / COPILOT_COOKIES) instead",
        path,
    )
    raise SystemExit(2)


def graceful_timeout(grace: float) -> int:
    """uvicorn's own shutdown timeout: the grace period plus time to send the last events."""
    return math.ceil(max(grace, 0.0)) + GRACE_MARGIN_SECONDS


if __name__ == "__main__":
    main()
