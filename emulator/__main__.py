"""Run the Bing emulator standalone: python -m emulator --host 127.0.0.1 --port 8765.

`--port` is the ChatHub websocket port; create and stats are served with keep-alive on
`--http-port` (0 = any free port). Once listening, one line is printed to stdout (flushed):
`emulator ready: create=URL stats=URL chathub=URL http_port=N port=M web=URL copilot=URL
copilot_ws=URL` (web: the stand-in for https://www.bing.com's image endpoints, for BING_WEB_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .server import BingEmulator


def _parse_args() -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="ChatHub websocket port")
    parser.add_argument("--http-port", type=int, default=0,
                        help="keep-alive HTTP port for create and stats (0 = any free port)")
    parser.add_argument("--words", type=int, default=40, help="default answer length in words")
    parser.add_argument("--delay", type=float, default=0.002, help="seconds between updates")
    parser.add_argument("--think", type=float, default=0.0, help="seconds of pings before text")
    parser.add_argument("--keep-records", type=int, default=1000,
                        help="keep only the newest N chat and connection records (and "
                             "100 x N conversations)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for the fault-rate draws (reproducible runs)")
    parser.add_argument("--create-failure-rate", type=float, default=0.0,
                        help="share of creates answered HTTP 500")
    parser.add_argument("--drop-rate", type=float, default=0.0,
                        help="share of chats whose connection is aborted after some text")
    parser.add_argument("--drop-before-text-rate", type=float, default=0.0,
                        help="share of chats whose connection is aborted before any text")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    """Start the emulator and serve until cancelled."""
    emulator = BingEmulator(args.host, args.port, http_port=args.http_port, words=args.words,
                            update_delay=args.delay, think=args.think,
                            keep_records=args.keep_records, seed=args.seed)
    emulator.faults.create_failure_rate = args.create_failure_rate
    emulator.faults.drop_rate = args.drop_rate
    emulator.faults.drop_before_text_rate = args.drop_before_text_rate
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with emulator:
        print(f"emulator ready: create={emulator.create_url} stats={emulator.stats_url} "
              f"chathub={emulator.chathub_url} http_port={emulator.http_port} "
              f"port={emulator.port} web={emulator.web_url} copilot={emulator.copilot_url} "
              f"copilot_ws={emulator.copilot_ws_url}", flush=True)
        await stop.wait()


def main() -> None:
    """Entry point."""
    args = _parse_args()
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
