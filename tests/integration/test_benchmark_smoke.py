"""`python -m benchmarks.run --smoke` works end to end: processes up, table out, nothing failed.

No performance numbers are asserted; this only proves the benchmark machinery runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_produces_a_table_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=45, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| scenario |" in done.stdout
    for name in ("short-c1", "long-c1", "chat5", "soak", "scale-chat5-redis"):
        assert f"| {name} |" in done.stdout
    assert "total errors: 0" in done.stdout
    scaled = next(line for line in done.stdout.splitlines() if line.startswith("| scale-chat5-redis |"))
    assert "2 instances sharing Redis" in scaled
    assert "proxy: creates/chat 1.00" in scaled  # turns alternated between the instances
    assert "Traceback" not in done.stderr
    written = out.read_text("utf-8")
    assert "| scenario |" in written and "## Targets" in written
    leftover = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not leftover, "the benchmark left processes running"
