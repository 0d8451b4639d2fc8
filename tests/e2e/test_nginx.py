"""deploy/nginx.conf for real: nginx in front of two instances sharing Redis, as the scale profile
runs it (nginx-light from Debian; .ci/run installs it). Its round robin alternates a chat's turns."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulator import BingEmulator
from tests.conftest import openai_client
from tests.e2e.helpers import user
from tests.e2e.test_scale import instances, redis_server, turn
from tests.redis_server import RedisServer, free_port

__all__ = ["redis_server"]  # the module-scoped Redis fixture, shared with test_scale
ROOT = Path(__file__).resolve().parents[2]


def nginx_config(tmp: Path, port: int, upstreams: list[str]) -> Path:
    """The repository's site config, pointed at loopback instances, inside a minimal main config."""
    servers = "".join(f"    server {url.removeprefix('http://')};\n" for url in upstreams)
    site = (ROOT / "deploy" / "nginx.conf").read_text("utf-8")
    site = site.replace("    server replica:22222 max_fails=3 fail_timeout=10s;\n", servers)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    assert servers in site and str(port) in site
    (tmp / "site.conf").write_text(site, "utf-8")
    main = tmp / "nginx.conf"
    main.write_text(
        f"user root;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nworker_processes 1;\n"
        f"events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {tmp}/body;\n"
        f"proxy_temp_path {tmp}/proxy;\ninclude {tmp}/site.conf;\n}}\n",
        "utf-8",
    )
    return main


@pytest.fixture
def nginx_in_front(
    emulator: BingEmulator, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[str, list[str]]]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("nginx is not installed (optional here; .ci/run installs nginx-light)")
    port = free_port()
    with instances(emulator, redis_server, tmp_path) as urls:
        config = nginx_config(tmp_path, port, urls)
        argv = [binary, "-c", str(config), "-p", str(tmp_path), "-g", "daemon off;"]
        with (tmp_path / "nginx.out").open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                yield wait_for(f"http://127.0.0.1:{port}", process, tmp_path / "nginx.out"), urls
            finally:
                process.terminate()
                process.wait(10)


def wait_for(base: str, process: subprocess.Popen[bytes], output: Path) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return base
        except httpx.TransportError:
            pass
        assert process.poll() is None, output.read_text("utf-8", "replace")
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.05)


def test_a_chat_through_nginx_alternates_instances_and_streams(
    nginx_in_front: tuple[str, list[str]], emulator: BingEmulator
) -> None:
    front, behind = nginx_in_front
    before, sent_before = emulator.create_count, len(emulator.chat_requests)
    with openai_client(front) as client:
        messages: list[dict[str, str]] = []
        for index in range(4):
            turn(client, messages, f"question {index}", stream=index % 2 == 0)
        long_answer = user("emulate:words=200 hi")
        chunks = list(client.chat.completions.create(model="balanced", messages=long_answer, stream=True))
    assert emulator.create_count == before + 2  # one per chat, whichever instance nginx picked
    starts = [r["isStartOfSession"] for r in emulator.chat_requests[sent_before:]]
    assert starts == [True, False, False, False, True]
    assert len(chunks) > 10 and chunks[-1].choices[0].finish_reason == "stop"  # streamed through
    assert all(httpx.get(f"{url}/health").json()["last_success_at"] for url in behind)  # both served
