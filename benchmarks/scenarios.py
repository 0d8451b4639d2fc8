"""Scenario sides: warm up, then measure a run with CPU, RSS and emulator-counter readings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal

import psutil

from benchmarks.direct_client import DirectClient
from benchmarks.load import Budget, Job, RunStats, percentile, run_load
from benchmarks.procs import HOST, Stack
from benchmarks.proxy_client import Outcome, ProxyClient

Kind = Literal["short", "long", "chat5", "soak"]
Side = Literal["proxy", "direct"]
MB = 1024 * 1024
RSS_SAMPLE_SECONDS = 0.1
TURNS = 5


@dataclass(frozen=True)
class Scenario:
    """One table row: what to ask, how much, and through which sides."""

    name: str
    kind: Kind
    words: int
    budget: Budget
    sides: tuple[Side, ...] = ("proxy", "direct")
    warmup: int = 0
    checkpoint: int = 1000  # soak: read the service's RSS after this many requests
    timeout: float = 60.0
    # (service instances, shared through Redis?): with several, requests alternate between them.
    shape: tuple[int, bool] = (1, False)


@dataclass
class SideResult:
    """The measured numbers of one side of a scenario."""

    side: Side
    stats: RunStats
    service_cpu: float  # seconds
    emulator_cpu: float
    client_cpu: float
    peak_rss: int
    counters: dict[str, int] = field(default_factory=dict)  # emulator stats deltas
    rss_checkpoint: int | None = None
    rss_end: int | None = None
    service_sys: float = 0.0  # the kernel part of service_cpu
    checkpoint_at: int = 0
    redis_cpu: float | None = None  # seconds, when the instances share state through Redis
    instances: int = 1

    def per_request_ms(self, seconds: float) -> float | None:
        """CPU seconds spread over completed requests, in ms."""
        return 1000 * seconds / self.stats.requests if self.stats.requests else None

    @property
    def rps(self) -> float:
        return self.stats.requests / self.stats.elapsed if self.stats.elapsed else 0.0

    def ttft_ms(self, pct: float) -> float | None:
        value = percentile(self.stats.ttfts, pct)
        return None if value is None else 1000 * value

    def per_unit(self, counter: str) -> float | None:
        """An emulator counter delta per completed unit (e.g. creates per chat)."""
        return self.counters.get(counter, 0) / self.stats.ok_units if self.stats.ok_units else None


def prompt(words: int, index: int, turn: int = 0) -> str:
    """A distinct prompt asking the emulator for `words` words."""
    return f"Question {index}.{turn}: tell me about topic {index} emulate:words={words}"


def make_job(stack: Stack, scenario: Scenario, side: Side) -> tuple[Job, list[ProxyClient]]:
    """The job for one side, and the keep-alive clients to close afterwards."""
    if side == "direct":
        direct = DirectClient(HOST, stack.emulator_port, scenario.timeout, stack.emulator_http_port)
        if scenario.kind == "chat5":
            return (lambda w, i: direct.chat([prompt(scenario.words, i, t) for t in range(TURNS)])), []
        return (lambda w, i: direct.ask(prompt(scenario.words, i))), []
    ports = stack.service_ports
    # One keep-alive connection per worker and instance; with several instances, a worker's
    # requests (and a chat's turns) alternate between them.
    clients = [[ProxyClient(HOST, port, scenario.timeout) for port in ports]
               for _ in range(max(1, scenario.budget.concurrency))]
    flat = [client for per_worker in clients for client in per_worker]
    if scenario.kind == "chat5":
        return (lambda w, i: proxy_chat(clients[w], scenario.words, i)), flat
    sent = [0] * len(clients)  # per worker, so each keep-alive connection is used every other time

    def ask(w: int, i: int) -> Awaitable[Outcome]:
        sent[w] += 1
        return clients[w][sent[w] % len(ports)].chat(
            [{"role": "user", "content": prompt(scenario.words, i)}])
    return ask, flat


async def proxy_chat(clients: list[ProxyClient], words: int, index: int) -> Outcome:
    """A 5-turn chat in the resend-everything style: the full history on every request, each turn
    on the next instance when there are several."""
    messages: list[dict[str, str]] = []
    ttfts: list[float] = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": prompt(words, index, turn)})
        result = await clients[turn % len(clients)].chat(messages)
        if not result.ok:
            return Outcome(ok=False, ttfts=ttfts, requests=TURNS, error=result.error)
        ttfts += result.ttfts
        messages.append({"role": "assistant", "content": result.text})
    return Outcome(ok=True, ttfts=ttfts, requests=TURNS)


async def sample_rss(stack: Stack, peak: list[int], seconds: float) -> None:
    """Keep peak[0] at the service's highest RSS until cancelled (or `seconds` pass)."""
    for _ in range(int(seconds / RSS_SAMPLE_SECONDS) + 1):
        peak[0] = max(peak[0], stack.service.rss())
        await asyncio.sleep(RSS_SAMPLE_SECONDS)


async def settled_stats(stack: Stack, seconds: float = 3.0) -> dict[str, int]:
    """Emulator counters once they stop moving (a warm pool may still be refilling)."""
    last = stack.emulator_stats()
    for _ in range(int(seconds / 0.3)):
        await asyncio.sleep(0.3)
        now = stack.emulator_stats()
        if now == last:
            break
        last = now
    return last


async def run_side(stack: Stack, scenario: Scenario, side: Side) -> SideResult:
    """Warm up, then measure one side of a scenario."""
    job, clients = make_job(stack, scenario, side)
    label = f"{scenario.name} {side}"
    try:
        if scenario.warmup:
            warm = Budget(scenario.warmup, scenario.budget.concurrency, 20.0)
            await run_load(f"{label} warm-up", lambda w, i: job(w, 10**6 + i), warm)
        return await measure(stack, scenario, side, job, label)
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def measure(stack: Stack, scenario: Scenario, side: Side, job: Job, label: str) -> SideResult:
    """One measured run with CPU before/after, RSS sampling and the soak checkpoint."""
    me = psutil.Process()
    before_stats = await settled_stats(stack)
    sys0 = stack.service.cpu_split()[1]
    redis0 = stack.redis.cpu_seconds() if stack.redis else 0.0
    cpu0 = (stack.service.cpu_seconds(), stack.emulator.cpu_seconds(), _own_cpu(me))
    peak = [stack.service.rss()]
    checkpoint: list[int] = []

    def on_unit(stats: RunStats) -> None:
        if not checkpoint and stats.units >= scenario.checkpoint and scenario.kind == "soak":
            checkpoint.append(stack.service.rss())

    sampler = asyncio.create_task(sample_rss(stack, peak, scenario.budget.seconds + 60))
    try:
        stats = await run_load(label, job, scenario.budget, on_unit)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    cpu1 = (stack.service.cpu_seconds(), stack.emulator.cpu_seconds(), _own_cpu(me))
    sys1 = stack.service.cpu_split()[1]
    redis_cpu = stack.redis.cpu_seconds() - redis0 if stack.redis else None
    rss_end = stack.service.rss()
    after_stats = await settled_stats(stack) if scenario.kind == "chat5" else stack.emulator_stats()
    return SideResult(side, stats, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2],
                      max(peak[0], rss_end),
                      {k: after_stats[k] - before_stats.get(k, 0) for k in after_stats},
                      checkpoint[0] if checkpoint else None, rss_end, sys1 - sys0,
                      scenario.checkpoint, redis_cpu if side == "proxy" else None,
                      len(stack.service_ports) if side == "proxy" else 1)


def _own_cpu(me: psutil.Process) -> float:
    times = me.cpu_times()
    return float(times.user + times.system)


async def run_scenario(stack: Stack, scenario: Scenario) -> dict[Side, SideResult]:
    """Both sides of a scenario, one after the other, with start/end lines."""
    results: dict[Side, SideResult] = {}
    for side in scenario.sides:
        b = scenario.budget
        print(f"  [{scenario.name}] {side}: start ({b.count} x {scenario.kind}, concurrency "
              f"{b.concurrency}, cap {b.seconds:g} s)", flush=True)
        started = time.perf_counter()
        result = await run_side(stack, scenario, side)
        results[side] = result
        print(f"  [{scenario.name}] {side}: end after {time.perf_counter() - started:.1f} s: "
              f"{result.stats.requests} requests ok, {result.stats.errors} errors, "
              f"{result.rps:.1f} req/s", flush=True)
    return results
