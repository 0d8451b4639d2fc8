"""`python -m benchmarks.run`: the proxy against a direct Bing client, on the same local emulator.

Starts the emulator and the service as separate processes on loopback ports, drives both paths
from this process, prints one markdown table with PASS/FAIL lines per target, and writes it to
benchmarks/results.md (full runs). Every scenario is bounded by a request count and a time cap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from benchmarks.load import Budget
from benchmarks.procs import BENCH_ACCOUNT_CONCURRENCY, ROOT, Child, Services, Stack, running_stack
from benchmarks.report import Results, document, table, target_lines, targets
from benchmarks.scenarios import Scenario, Side, run_scenario, run_side

DEFAULT_OUT = Path(__file__).resolve().parent / "results.md"
SHORT, LONG = 40, 3000


def _full() -> list[Scenario]:
    return [
        Scenario("short-c1", "short", SHORT, Budget(300, 1, 15), warmup=10),
        Scenario("short-c50", "short", SHORT, Budget(3000, 50, 25), warmup=50),
        Scenario("short-c200", "short", SHORT, Budget(4000, 200, 25), warmup=200),
        Scenario("long-c1", "long", LONG, Budget(6, 1, 30), warmup=1, timeout=120),
        Scenario("long-c4", "long", LONG, Budget(12, 4, 40), timeout=120),
        Scenario("chat5", "chat5", SHORT, Budget(10, 1, 25), warmup=1),
        Scenario("soak", "soak", SHORT, Budget(10_000, 50, 120), sides=("proxy",), warmup=50,
                 checkpoint=1000),
        *_scale(Budget(3000, 50, 25), Budget(10, 1, 25), warmup=50),
    ]


def _scale(short: Budget, chat: Budget, warmup: int = 0) -> list[Scenario]:
    """What sharing state through Redis costs: one process in memory, one process with its state in
    Redis (the store's own cost), two instances sharing Redis (requests alternating between them)."""
    proxy: tuple[Side, ...] = ("proxy",)
    return [
        Scenario("scale-c50-single", "short", SHORT, short, sides=proxy, warmup=warmup),
        Scenario("scale-c50-1redis", "short", SHORT, short, sides=proxy, warmup=warmup, shape=(1, True)),
        Scenario("scale-c50-redis", "short", SHORT, short, sides=proxy, warmup=warmup, shape=(2, True)),
        Scenario("scale-chat5-redis", "chat5", SHORT, chat, sides=proxy, warmup=1, shape=(2, True)),
    ]


def _quick() -> list[Scenario]:
    return [
        Scenario("short-c1", "short", SHORT, Budget(20, 1, 4), warmup=3),
        Scenario("short-c50", "short", SHORT, Budget(200, 50, 4), warmup=50),
        Scenario("short-c200", "short", SHORT, Budget(300, 200, 4)),
        Scenario("long-c1", "long", LONG, Budget(1, 1, 15), timeout=60),
        Scenario("chat5", "chat5", SHORT, Budget(2, 1, 6)),
        Scenario("soak", "soak", SHORT, Budget(500, 50, 6), sides=("proxy",), checkpoint=100),
        *_scale(Budget(200, 50, 4), Budget(4, 1, 6), warmup=50),
    ]


def _smoke() -> list[Scenario]:
    return [
        Scenario("short-c1", "short", SHORT, Budget(3, 1, 3), warmup=1),
        Scenario("short-c4", "short", SHORT, Budget(8, 4, 3)),
        Scenario("long-c1", "long", 300, Budget(1, 1, 5)),
        Scenario("chat5", "chat5", SHORT, Budget(1, 1, 5)),
        Scenario("soak", "soak", SHORT, Budget(20, 4, 4), sides=("proxy",), checkpoint=10),
        Scenario("scale-chat5-redis", "chat5", SHORT, Budget(1, 1, 5), sides=("proxy",),
                 shape=(2, True)),
    ]


PRESETS = {"full": _full, "quick": _quick, "smoke": _smoke}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="small counts: a smoke check in about 30 s")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="tiny counts and concurrency (what the pytest smoke test runs)")
    parser.set_defaults(mode="full")
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                        help="run only this scenario (or group: short, long, chat5, soak, "
                             "scale); "
                             "repeatable")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the service (e.g. WARM_POOL_SIZE=4)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the results here (full runs default to {DEFAULT_OUT})")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR",
                        help="keep the emulator's and the service's logs in DIR (else discarded)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target fails or a request failed")
    return parser.parse_args(argv)


def select(scenarios: list[Scenario], only: list[str]) -> list[Scenario]:
    """The scenarios named by --only (exact name or the group before '-'); all if none."""
    if not only:
        return scenarios
    chosen = [s for s in scenarios if s.name in only or s.name.split("-")[0] in only]
    if not chosen:
        names = ", ".join(s.name for s in scenarios)
        raise SystemExit(f"--only {' '.join(only)}: no such scenario (have: {names})")
    return chosen


def service_env_overrides(pairs: list[str]) -> dict[str, str]:
    """--env NAME=VALUE pairs."""
    extra: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env {pair!r}: expected NAME=VALUE")
        extra[name] = value
    return extra


def reported_env(extra: dict[str, str]) -> dict[str, str]:
    """Service settings that came from our environment or --env, for the results header."""
    text = (ROOT / "utils" / "settings.py").read_text("utf-8", "replace")
    names = {n.upper() for n in re.findall(r"^    ([a-z_]+): ", text, re.MULTILINE)}
    names -= {"BING_COOKIES", "BING_CREATE_URL", "BING_CHATHUB_URL", "LOG_LEVEL", "API_KEYS"}
    # the benchmark's own defaults (benchmarks/procs.service_env): the account cap, and no log line
    # per request (LOG_LEVEL=INFO's line costs about 3 % of a short answer's CPU)
    found = {"ACCOUNT_CONCURRENCY": str(BENCH_ACCOUNT_CONCURRENCY), "LOG_LEVEL": "WARNING"}
    found.update({k: v for k, v in os.environ.items() if k.upper() in names})
    found.update(extra)
    return found


async def warm_up(stack: Stack) -> None:
    """A few requests on both paths before anything is measured."""
    warm = Scenario("warm-up", "short", SHORT, Budget(20, 4, 15))
    print("  [warm-up] 20 requests per side", flush=True)
    for side in warm.sides:
        await run_side(stack, warm, side)


async def run_all(stack: Stack, scenarios: list[Scenario]) -> Results:
    """Warm up, then every scenario in order."""
    await warm_up(stack)
    results: Results = {}
    for scenario in scenarios:
        results[scenario.name] = await run_scenario(stack, scenario)
    return results


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def execute(scenarios: list[Scenario], extra: dict[str, str], logs: Path | None = None) -> Results:
    """Run the scenarios of each shape (the one-process ones first) on their own set of processes,
    stopped whatever happens; results keep the scenarios' order."""
    results: Results = {}
    for shape in sorted({s.shape for s in scenarios}):
        if shape != (1, False):
            print(f"  [scale] starting {shape[0]} service instance(s) with their state in Redis",
                  flush=True)
        results.update(execute_on([s for s in scenarios if s.shape == shape], extra, shape, logs))
    return {s.name: results[s.name] for s in scenarios}


def execute_on(scenarios: list[Scenario], extra: dict[str, str], shape: tuple[int, bool],
               keep: Path | None = None) -> Results:
    """Start the processes, run `scenarios`, and stop the processes whatever happens."""
    instances, redis = shape
    with contextlib.ExitStack() as stack_of_dirs:
        if keep is None:
            logs = Path(stack_of_dirs.enter_context(tempfile.TemporaryDirectory(prefix="bench-logs-")))
        else:
            logs = keep / f"{instances}-instance{'s' if instances > 1 else ''}{'-redis' if redis else ''}"
            logs.mkdir(parents=True, exist_ok=True)
        return _execute_in(scenarios, extra, instances, redis, logs)


def _execute_in(scenarios: list[Scenario], extra: dict[str, str], instances: int, redis: bool,
                logs: Path) -> Results:
    with running_stack(logs, extra, instances=instances, redis=redis) as stack:
        try:
            with _runner() as runner:
                return runner.run(run_all(stack, scenarios))
        except Exception:
            tails: list[Child | Services] = [stack.service, stack.emulator]
            tails += [stack.redis] if stack.redis else []
            for child in tails:
                print(f"--- {child.name} log tail ---\n{child.log_tail()}", file=sys.stderr)
            raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless --check finds a failed target or request."""
    args = parse_args(argv)
    scenarios = select(PRESETS[args.mode](), args.only)
    extra = service_env_overrides(args.env)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    print(f"benchmark ({args.mode}): {', '.join(s.name for s in scenarios)}", flush=True)
    try:
        results = execute(scenarios, extra, args.logs)
    except KeyboardInterrupt:
        print("\ninterrupted: the emulator and the service were stopped", file=sys.stderr)
        return 130
    found = targets(results)
    errors = sum(r.stats.errors for sides in results.values() for r in sides.values())
    print("\n" + table(results) + "\n\n" + target_lines(found))
    print(f"\ntotal errors: {errors}; wall time {time.perf_counter() - started:.0f} s")
    out = args.out or (DEFAULT_OUT if args.mode == "full" else None)
    if out is not None:
        command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
        out.write_text(document(results, reported_env(extra), args.mode, command), "utf-8")
        print(f"written to {out}")
    failed = errors > 0 or any(t.verdict == "FAIL" for t in found)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
