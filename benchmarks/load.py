"""A bounded closed-loop load runner: N workers share a request budget and a wall-clock cap."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from benchmarks.proxy_client import Outcome

#: One unit of work for worker `w` and global index `i`.
Job = Callable[[int, int], Awaitable[Outcome]]
PROGRESS_SECONDS = 5.0
GRACE_SECONDS = 30.0


@dataclass
class RunStats:
    """What a run measured."""

    units: int = 0
    ok_units: int = 0
    requests: int = 0
    errors: int = 0
    ttfts: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.units += 1
        self.ttfts += outcome.ttfts
        if outcome.ok:
            self.ok_units += 1
            self.requests += outcome.requests
        else:
            self.errors += 1
            self.error_kinds[outcome.error or "unknown"] += 1


@dataclass
class Budget:
    """How much work a run may do."""

    count: int
    concurrency: int
    seconds: float


async def run_load(label: str, job: Job, budget: Budget,
                   on_unit: Callable[[RunStats], None] | None = None,
                   keep_outcomes: bool = False) -> RunStats:
    """Run `job` up to budget.count times on budget.concurrency workers, stopping at the cap."""
    stats = RunStats()
    issued = 0
    start = time.perf_counter()
    deadline = start + budget.seconds

    async def worker(w: int) -> None:
        nonlocal issued
        while issued < budget.count and time.perf_counter() < deadline:
            index, issued = issued, issued + 1
            outcome = await job(w, index)
            stats.add(outcome)
            if keep_outcomes:
                stats.outcomes.append(outcome)
            if on_unit is not None:
                on_unit(stats)

    workers = [asyncio.create_task(worker(w))
               for w in range(max(1, min(budget.concurrency, budget.count)))]
    reporter = asyncio.create_task(_report(label, stats, budget, start))
    try:
        done, pending = await asyncio.wait(workers, timeout=budget.seconds + GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            stats.errors += len(pending)
            stats.error_kinds["cut at the time cap"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        reporter.cancel()
        for task in workers:
            task.cancel()
        await asyncio.gather(reporter, *workers, return_exceptions=True)
    stats.elapsed = time.perf_counter() - start
    return stats


async def _report(label: str, stats: RunStats, budget: Budget, start: float) -> None:
    """Print a progress line every PROGRESS_SECONDS (cancelled when the run ends)."""
    for _ in range(int((budget.seconds + GRACE_SECONDS) / PROGRESS_SECONDS) + 1):
        await asyncio.sleep(PROGRESS_SECONDS)
        print(f"    {label}: {stats.units}/{budget.count} done, {stats.errors} errors, "
              f"{time.perf_counter() - start:.0f} s", flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
