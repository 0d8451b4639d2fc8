"""The emulator and the service as separate OS processes on free loopback ports, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_SECONDS = 30.0
STOP_SECONDS = 5.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nobody listens on right now."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind((HOST, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


@dataclass
class Child:
    """One started process, its log file and a psutil handle for CPU and memory readings."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    ps: psutil.Process

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU time used so far."""
        times = self.ps.cpu_times()
        return float(times.user), float(times.system)

    def rss(self) -> int:
        """Resident set size in bytes."""
        return int(self.ps.memory_info().rss)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The end of the process's combined stdout/stderr."""
        self.log_file.flush()
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_SECONDS; always reaps and closes the log."""
        try:
            if self.alive():
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(STOP_SECONDS)
        finally:
            self.log_file.close()


def start_child(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> Child:
    """Start `argv` from the repository root in its own session (Ctrl-C reaches only us)."""
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    try:
        popen = subprocess.Popen(argv, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    return Child(name, popen, log_path, log_file, psutil.Process(popen.pid))


def get_json(port: int, path: str, timeout: float = 5.0) -> Any:
    """GET a loopback JSON endpoint (blocking; only used between measurements)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered HTTP {response.status}")
        return json.loads(body)
    finally:
        conn.close()


def wait_ready(child: Child, port: int, path: str, timeout: float = READY_SECONDS) -> None:
    """Poll GET `path` until it answers 200 JSON; fail fast if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            get_json(port, path, timeout=2.0)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not ready after {timeout:g} s:\n{child.log_tail()}")
        time.sleep(0.1)


@dataclass
class Services:
    """One or more service instances, read as one: CPU and RSS are their sums."""

    children: list[Child]
    name: str = "service"

    def cpu_seconds(self) -> float:
        """User plus system CPU time of every instance."""
        return sum(child.cpu_seconds() for child in self.children)

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU time of every instance."""
        splits = [child.cpu_split() for child in self.children]
        return sum(u for u, _ in splits), sum(s for _, s in splits)

    def rss(self) -> int:
        """The instances' resident set sizes, added up."""
        return sum(child.rss() for child in self.children)

    def log_tail(self, lines: int = 25) -> str:
        """The end of each instance's log."""
        return "\n".join(f"[{c.name}]\n{c.log_tail(lines)}" for c in self.children)


@dataclass
class Stack:
    """The running emulator and service instance(s) (plus Redis when they share state); the emulator
    serves create and stats (keep-alive) on `emulator_http_port` and ChatHub on `emulator_port`."""

    emulator: Child
    service: Services
    emulator_port: int
    service_ports: list[int]
    emulator_http_port: int
    redis: Child | None = None

    @property
    def service_port(self) -> int:
        """The first instance's port."""
        return self.service_ports[0]

    def emulator_stats(self) -> dict[str, int]:
        """The emulator's counters (GET /_emulator/stats)."""
        stats: dict[str, int] = get_json(self.emulator_http_port, "/_emulator/stats")
        return stats


BENCH_ACCOUNT_CONCURRENCY = 256


def service_env(emulator_port: int, emulator_http_port: int, extra: Mapping[str, str]
                ) -> dict[str, str]:
    """The inherited environment (so WARM_POOL_SIZE etc. pass) pointed at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BING_")}
    env.update({
        "BING_CREATE_URL": f"http://{HOST}:{emulator_http_port}/turing/conversation/create",
        "BING_CHATHUB_URL": f"ws://{HOST}:{emulator_port}/sydney/ChatHub",
        "BING_COOKIES": "_U=bench",
        "LOG_LEVEL": "WARNING",
        "API_KEYS": "",
        # The direct client runs every conversation at once on its one cookie; the proxy gets the
        # same upstream concurrency, so the table measures the proxy, not its politeness cap (4).
        "ACCOUNT_CONCURRENCY": str(BENCH_ACCOUNT_CONCURRENCY),
    })
    env.update(extra)
    return env


@contextlib.contextmanager
def running_stack(log_dir: Path, extra_env: Mapping[str, str], keep_records: int = 1000,
                  instances: int = 1, redis: bool = False) -> Iterator[Stack]:
    """Start the emulator (and Redis), then the service instance(s); stop all whatever happens."""
    with contextlib.ExitStack() as stops:  # every registered stop runs, even if one raises
        emu_port, emu_http_port, *svc_ports = free_ports(2 + instances)
        emu = start_child("emulator", [sys.executable, "-m", "emulator", "--host", HOST,
                                       "--port", str(emu_port), "--http-port", str(emu_http_port),
                                       "--keep-records", str(keep_records),
                                       "--log-level", "WARNING"],
                          os.environ, log_dir)
        stops.callback(emu.stop)
        wait_ready(emu, emu_http_port, "/_emulator/stats")
        env = service_env(emu_port, emu_http_port, extra_env)
        store = None
        if redis:
            store, redis_port = start_redis(log_dir)
            stops.callback(store.stop)
            env["REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
        services = []
        for index, port in enumerate(svc_ports):
            name = "service" if instances == 1 else f"service-{index + 1}"
            svc = start_child(name, [sys.executable, "-m", "apis.chat_api", "--host", HOST,
                                     "--port", str(port)], env, log_dir)
            stops.callback(svc.stop)
            services.append(svc)
        for svc, port in zip(services, svc_ports, strict=True):
            wait_ready(svc, port, "/health")
        yield Stack(emu, Services(services), emu_port, svc_ports, emu_http_port, store)


def start_redis(log_dir: Path) -> tuple[Child, int]:
    """Debian's redis-server on a free loopback port, without persistence, answering PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("the scale scenarios need redis-server (apt-get install redis-server)")
    port = free_port()
    child = start_child("redis", [binary, "--port", str(port), "--bind", HOST, "--save", "",
                                  "--appendonly", "no", "--dir", str(log_dir)], os.environ, log_dir)
    deadline = time.monotonic() + READY_SECONDS
    while not _redis_answers(port):
        if not child.alive() or time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"redis-server did not start:\n{child.log_tail()}")
        time.sleep(0.05)
    return child, port


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False
