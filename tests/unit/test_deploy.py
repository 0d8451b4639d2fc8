"""docker-compose.yml and deploy/nginx.conf: parsed and checked (no Docker engine here), and
`nginx -t` on the proxy config when nginx is installed (.ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return loaded


def test_the_single_instance_needs_no_profile_and_no_redis(compose: dict[str, Any]) -> None:
    [single] = [s for s in compose["services"].values() if "profiles" not in s]
    assert "22222:22222" in single["ports"]
    assert "REDIS_URL" not in single["environment"]


def test_the_scale_profile_runs_replicas_with_workers_behind_nginx_and_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "replica", "proxy"):
        assert services[name]["profiles"] == ["scale"]
    replica = services["replica"]
    assert replica["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert replica["deploy"]["replicas"] >= 2
    assert replica["command"][replica["command"].index("--workers") + 1] != "1"
    assert "ports" not in replica  # reached only through nginx
    [single] = [s for s in services.values() if "profiles" not in s]
    assert replica["volumes"] == single["volumes"]  # the same accounts in every replica
    assert replica["environment"]["BING_COOKIES_FILE"] == single["environment"]["BING_COOKIES_FILE"]
    assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--save" in services["redis"]["command"]
    proxy = services["proxy"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    upstream = re.search(r"server\s+([\w.-]+):(\d+)", NGINX_CONF.read_text("utf-8"))
    assert upstream is not None and upstream.groups() == ("replica", "22222")


def test_no_secret_is_written_into_the_compose_file(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if name in ("BING_COOKIES", "API_KEYS", "ADMIN_KEY"):
                assert value == f"${{{name}:-}}"


def test_nginx_passes_streams_through_unbuffered() -> None:
    text = NGINX_CONF.read_text("utf-8")
    directives = dict(re.findall(r"^\s*(proxy_\w+)\s+([^;]+);", text, re.MULTILINE))
    assert directives["proxy_buffering"] == "off"
    assert directives["proxy_http_version"] == "1.1"
    assert directives["proxy_set_header"]  # at least one; Connection "" keeps upstream keep-alive
    assert 'proxy_set_header Connection ""' in text
    assert int(directives["proxy_read_timeout"].rstrip("s")) >= 300
    assert re.search(r"^\s*gzip off;", text, re.MULTILINE)


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (optional here; .ci/run installs nginx-light)")
    site = tmp_path / "site.conf"  # nginx -t resolves upstream names: the compose name becomes loopback
    site.write_text(NGINX_CONF.read_text("utf-8").replace("server replica:", "server 127.0.0.1:"), "utf-8")
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path};\ninclude {site};\n}}\n",
        "utf-8",
    )
    done = subprocess.run([nginx, "-t", "-q", "-c", str(main), "-p", str(tmp_path)], capture_output=True,
                          text=True, timeout=20, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
