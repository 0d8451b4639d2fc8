"""The results table, the PASS/FAIL targets and the machine description."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.procs import ROOT
from benchmarks.scenarios import MB, Side, SideResult

Results = dict[str, dict[Side, SideResult]]  # scenario name -> side -> result
COLUMNS = ("scenario", "n ok (P / D)", "req/s P", "req/s D", "P/D", "TTFT p50 ms (P / D)",
           "TTFT p95 ms (P / D)", "server CPU ms/req (kernel)", "emulator CPU ms/req (P / D)",
           "server/emulator CPU", "peak RSS MB", "errors (P / D)", "loadgen CPU % (P / D)",
           "notes")
RSS_FLAT_GROWTH = 0.10


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pair(p: SideResult | None, d: SideResult | None, get: Callable[[SideResult], float | None],
          digits: int = 1) -> str:
    left = _num(get(p), digits) if p else "–"
    right = _num(get(d), digits) if d else "–"
    return f"{left} / {right}"


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _load_pct(r: SideResult) -> float:
    return 100 * r.client_cpu / r.stats.elapsed if r.stats.elapsed else 0.0


def _server_cpu(p: SideResult | None) -> str:
    if p is None:
        return "–"
    return f"{_num(p.per_request_ms(p.service_cpu), 2)} ({_num(p.per_request_ms(p.service_sys), 2)})"


def _notes(p: SideResult | None, d: SideResult | None) -> str:
    notes: list[str] = []
    if p and p.redis_cpu is not None:
        who = (f"{p.instances} instances sharing Redis (server CPU and RSS are their sums)"
               if p.instances > 1 else "1 instance with its state in Redis")
        notes.append(f"{who}; Redis CPU {_num(p.per_request_ms(p.redis_cpu), 2)} ms/req")
    if p and p.rss_checkpoint is not None and p.rss_end is not None:
        notes.append(f"service RSS {p.rss_checkpoint / MB:.1f} MB after {p.checkpoint_at:,} "
                     f"requests → {p.rss_end / MB:.1f} MB after {p.stats.units:,}")
    for side in (p, d):
        if side and side.stats.requests != side.stats.ok_units:  # multi-turn units
            notes.append(f"{side.side}: creates/chat {_num(side.per_unit('creates'), 2)}, "
                         f"continued turns/chat {_num(side.per_unit('continued_chats'), 2)}")
        if side and side.stats.error_kinds:
            kinds = ", ".join(f"{k} ×{n}" for k, n in side.stats.error_kinds.most_common(3))
            notes.append(f"{side.side} errors: {kinds}")
    return "; ".join(notes)


def table(results: Results) -> str:
    """One markdown row per scenario, proxy (P) next to direct (D)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, sides in results.items():
        p, d = sides.get("proxy"), sides.get("direct")
        cells = [
            name,
            _pair(p, d, lambda r: r.stats.requests, 0),
            _num(p.rps if p else None), _num(d.rps if d else None),
            _num(_ratio(p.rps, d.rps) if p and d else None, 2),
            _pair(p, d, lambda r: r.ttft_ms(50)), _pair(p, d, lambda r: r.ttft_ms(95)),
            _server_cpu(p),
            _pair(p, d, lambda r: r.per_request_ms(r.emulator_cpu), 2),
            _num(_ratio(p.service_cpu, p.emulator_cpu) if p else None, 2),
            _num(p.peak_rss / MB if p else None),
            _pair(p, d, lambda r: r.stats.errors, 0),
            _pair(p, d, _load_pct, 0),
            _notes(p, d),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Target:
    """One goal: a measured value, a verdict and what it was measured on."""

    text: str
    value: str
    verdict: str  # PASS, FAIL or SKIP


def _target(text: str, value: float | None, ok: Callable[[float], bool], shown: str = "") -> Target:
    if value is None:
        return Target(text, "not measured", "SKIP")
    return Target(text, shown or f"{value:.2f}", "PASS" if ok(value) else "FAIL")


def targets(results: Results) -> list[Target]:
    """Evaluate the performance targets on whatever scenarios ran."""
    c50, c1 = results.get("short-c50", {}), results.get("short-c1", {})
    long1, chat, soak = results.get("long-c1", {}), results.get("chat5", {}), results.get("soak", {})
    p50, d50 = c50.get("proxy"), c50.get("direct")
    tp, td = c1.get("proxy"), c1.get("direct")
    lp, cp, sp = long1.get("proxy"), chat.get("proxy"), soak.get("proxy")
    ttft = _ratio(tp.ttft_ms(50), td.ttft_ms(50)) if tp and td else None
    growth = (_ratio(sp.rss_end, sp.rss_checkpoint) if sp and sp.rss_checkpoint else None)
    return [
        _target("throughput proxy/direct at 50 concurrent short streams ≥ 0.5",
                _ratio(p50.rps, d50.rps) if p50 and d50 else None, lambda v: v >= 0.5),
        _target("server CPU per short streamed answer ≤ 2 ms (short-c50)",
                p50.per_request_ms(p50.service_cpu) if p50 else None, lambda v: v <= 2.0),
        _target("TTFT p50 at concurrency 1: proxy ≤ direct (ratio shown)", ttft,
                lambda v: v <= 1.0),
        _target("long answer (3000 words): server CPU / emulator CPU ≤ 0.5",
                _ratio(lp.service_cpu, lp.emulator_cpu) if lp else None, lambda v: v <= 0.5),
        _target("emulator creates per 5-turn chat through the proxy = 1",
                cp.per_unit("creates") if cp else None, lambda v: round(v, 2) <= 1.0),
        _target(f"service RSS flat from request {sp.checkpoint_at if sp else 1000:,} to the end "
                f"(growth ≤ {RSS_FLAT_GROWTH:.0%})", growth, lambda v: v <= 1 + RSS_FLAT_GROWTH,
                f"×{growth:.3f}" if growth else ""),
    ]


def target_lines(found: list[Target]) -> str:
    """One PASS/FAIL/SKIP line per target."""
    return "\n".join(f"{t.verdict}  {t.text}: {t.value}" for t in found)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=5, check=False).stdout.strip()
        # (the results file a previous run left uncommitted says nothing about the code measured)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results.md"], cwd=ROOT,
                               text=True, capture_output=True, timeout=5, check=False).stdout
    except OSError:
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty.strip() else ''}"


def machine(extra_env: dict[str, str], mode: str) -> str:
    """The header of results.md."""
    env = ", ".join(f"{k}={v}" for k, v in sorted(extra_env.items())) or "none"
    return "\n".join([
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores",
        f"- Python {sys.version.split()[0]} ({sys.implementation.name})",
        f"- code: {_git_revision()}; mode: {mode}; extra service env: {env}",
    ])


def document(results: Results, extra_env: dict[str, str], mode: str, command: str) -> str:
    """The whole results.md."""
    return "\n\n".join([
        "# Benchmark results", machine(extra_env, mode), f"Command: `{command}`",
        "P = through the proxy, D = a direct Bing client against the same emulator. "
        "CPU ms/req = process CPU (user+system) over the run / completed requests; "
        "loadgen CPU % = the benchmark process itself (100 % = one core).",
        table(results), "## Targets", "```\n" + target_lines(targets(results)) + "\n```", ""])
