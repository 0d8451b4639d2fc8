"""Deployment: the Dockerfile and docker-compose.yml (parsed: no Docker engine here), the container's
health check, JSON logs from a real process, and a clear exit when the accounts file is missing."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from apis.chat_api import check_accounts_file
from tests.e2e.helpers import user
from tests.e2e.test_cli import free_port
from utils.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BING_", "API_KEYS", "LOG_"))}
    return {**env, **extra}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_checks_health_and_reads_a_mounted_accounts_file() -> None:
    steps = dockerfile_instructions()
    [health] = [args for name, args in steps if name == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :].strip())
    assert command == ["python", "-m", "apis.healthcheck", "http://127.0.0.1:22222/health"]
    assert "curl" not in health
    assert ("ENV", "BING_COOKIES_FILE=/data/accounts.json") in steps
    assert ("VOLUME", '["/data"]') in steps
    assert ("EXPOSE", "22222") in steps
    for name, args in steps:
        if name == "COPY":
            assert (ROOT / args.split()[0]).exists(), args
    assert any(name == "USER" and args != "root" for name, args in steps)
    assert (ROOT / "apis" / "static" / "index.html").exists()  # copied with apis/


def test_compose_runs_it_with_the_accounts_file_and_restarts_it() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    [(_name, service)] = [(n, s) for n, s in compose["services"].items() if "profiles" not in s]
    assert service["build"] == "."
    assert "22222:22222" in service["ports"]
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    mounts = [volume.split(":") for volume in service["volumes"]]
    [(host, target, mode)] = [m for m in mounts if m[1] == "/data"]
    assert mode == "ro" and not host.endswith(".json")  # a folder: the file can be replaced in place
    accounts = service["environment"]["BING_COOKIES_FILE"]
    assert Path(accounts).parent == Path(target)
    check = service["healthcheck"]
    assert check["test"][0] == "CMD" and "apis.healthcheck" in check["test"]
    assert any("/health" in part for part in check["test"])
    assert set(check) >= {"interval", "timeout", "retries"}
    assert service["environment"]["LOG_FORMAT"] in ("json", "text")


def start_demo(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "apis.chat_api", "--demo", "--host", "127.0.0.1", "--port", str(port)]
    env = clean_env(LOG_FORMAT="json", BING_COOKIES_FILE="/data/not-mounted.json")
    with log_path.open("wb") as log_file:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base}/health")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def healthcheck(url: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "apis.healthcheck", url], cwd=ROOT, capture_output=True
    ).returncode


def test_a_real_process_logs_json_and_passes_its_health_check(tmp_path: Path) -> None:
    port, log_path = free_port(), tmp_path / "service.log"
    process = start_demo(port, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base)
        assert healthcheck(f"{base}/health") == 0
        body = {"model": "balanced", "messages": user("hi"), "stream": True}
        response = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-request-id": "json-1"})
        assert response.status_code == 200
        time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(15)
    assert healthcheck(f"{base}/health") == 1
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    [line] = [e for e in entries if e.get("request_id") == "json-1" and e["logger"] == "apis.requests"]
    assert line["level"] == "INFO" and line["status"] == 200 and line["model"] == "balanced"
    assert line["account"] == "default" and line["ttft_ms"] > 0 and line["bytes_out"] == len(response.content)
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's own lines are JSON too


def test_a_missing_accounts_file_stops_the_start_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apis.chat_api", "--port", str(free_port())],
        cwd=ROOT,
        env=clean_env(BING_COOKIES_FILE="/data/not-mounted.json"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "BING_COOKIES_FILE=/data/not-mounted.json does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_accounts_file_falls_back_to_bing_cookies() -> None:
    """`docker run -e BING_COOKIES=...` without a mounted file: the image's default file is absent."""
    settings = check_accounts_file(Settings(bing_cookies_file="/data/not-mounted.json", bing_cookies="_U=x"))
    assert settings.bing_cookies_file is None and settings.bing_cookies == "_U=x"


def test_readme_compose_and_run_commands_match_the_files() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up -d" in readme
    ours = [shlex.split(line.rstrip("\\")) for line in readme.splitlines() if line.startswith("docker run ")]
    ours = [args for args in ours if "bing-chat-api" in args]  # not the Open WebUI or NextChat lines
    assert len(ours) == 3
    for args in ours:
        assert args[args.index("-p") + 1] == "22222:22222"
    assert "$PWD/data:/data:ro" in ours[0]  # the folder the compose file mounts too
    assert ours[1][ours[1].index("-e") + 1].startswith("BING_COOKIES=")  # no file: the fallback
