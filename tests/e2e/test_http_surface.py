"""Routes, prefixes, models, CORS, health, docs and the error envelope for malformed input."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.e2e.helpers import user


def test_models_list_and_retrieve(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[:6] == [
        "precise",
        "precise-offline",
        "balanced",
        "balanced-offline",
        "creative",
        "creative-offline",
    ]
    assert "gpt-4" in ids
    model = client.models.retrieve("creative-offline")
    assert model.owned_by == "bing" and "search turned off" in (model.model_extra or {})["description"]


def test_unknown_model_retrieve_is_404_envelope(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/models/not/a-model")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("prefix", ["", "/v1", "/api", "/api/v1", "/v1/v1"])
def test_every_prefix_serves_chat(base_url: str, prefix: str) -> None:
    response = httpx.post(
        f"{base_url}{prefix}/chat/completions/", json={"model": "precise", "messages": user("hi")}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    assert httpx.get(f"{base_url}{prefix}/models").json()["object"] == "list"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"model": "precise"}', "messages"),
        (b'{"model": "precise", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
        (b'{"model": "precise", "messages": "hello"}', "messages"),
        (b"[]", None),
    ],
)
def test_malformed_bodies_get_400_envelopes(base_url: str, body: bytes, param: str | None) -> None:
    response = httpx.post(
        f"{base_url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param:
        assert error["param"] == param
    assert "detail" not in response.json()


def test_unknown_path_and_wrong_method_use_the_envelope(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v1/nothing").json()["error"]["type"] == "invalid_request_error"
    response = httpx.get(f"{base_url}/v1/chat/completions")
    assert response.status_code == 405 and "error" in response.json()


def test_cors_preflight_and_headers(base_url: str) -> None:
    preflight = httpx.options(
        f"{base_url}/v1/chat/completions",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert preflight.headers["access-control-allow-origin"] == "*"
    error = httpx.post(
        f"{base_url}/v1/chat/completions", content=b"{", headers={"Origin": "https://chat.example"}
    )
    assert error.status_code == 400 and error.headers["access-control-allow-origin"] == "*"


def test_health_and_docs(base_url: str) -> None:
    health = httpx.get(f"{base_url}/health").json()
    assert health["status"] == "ok"
    assert health["accounts"] == {"total": 1, "usable": 1, "states": {"healthy": 1}}
    assert "test-account-cookie" not in httpx.get(f"{base_url}/health").text
    assert httpx.get(f"{base_url}/docs").status_code == 200
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    assert "/v1/chat/completions" in paths and "/v1/models" in paths
