"""Settings parsing, model resolution, proxy choice, path tolerance."""

from __future__ import annotations

import pytest

from apis.middleware import normalize_path
from conversations.models import MODELS, list_models, resolve_model
from networks.chathub_ws import chathub_url
from utils.errors import ModelNotFound
from utils.proxy import pick_proxy
from utils.settings import Settings


def test_environment_names_are_the_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "k1, k2,")
    monkeypatch.setenv("MODEL_ALIASES", "gpt-4=creative,gpt-3.5-turbo=balanced")
    monkeypatch.setenv("UPSTREAM_IDLE_TIMEOUT", "7.5")
    monkeypatch.setenv("BING_CHATHUB_URL", "ws://127.0.0.1:1/sydney/ChatHub")
    settings = Settings(_env_file=None)
    assert settings.api_key_list == ["k1", "k2"]
    assert settings.alias_map == {"gpt-4": "creative", "gpt-3.5-turbo": "balanced"}
    assert settings.upstream_idle_timeout == 7.5
    assert settings.bing_chathub_url.startswith("ws://")


def test_cookies_and_keys_never_show_in_repr() -> None:
    settings = Settings(_env_file=None, bing_cookies="_U=secret", api_keys="sk-secret")
    assert "secret" not in repr(settings)


def test_nine_models_and_aliases() -> None:
    assert sorted(MODELS) == sorted(
        [
            *("precise", "balanced", "creative", "precise-offline", "balanced-offline", "creative-offline"),
            *("copilot", "copilot-reasoning", "copilot-smart"),
        ]
    )
    modes = {MODELS[m].mode for m in MODELS if MODELS[m].upstream == "copilot"}
    assert modes == {"chat", "reasoning", "smart"}
    assert all(MODELS[m].upstream == "bing" for m in MODELS if not m.startswith("copilot"))
    assert resolve_model("creative-offline", {}, "balanced").search is False
    assert resolve_model("gpt-4", {"gpt-4": "creative"}, "balanced").tone == "Creative"
    assert resolve_model(None, {}, "balanced").id == "balanced"
    with pytest.raises(ModelNotFound):
        resolve_model("gpt-4", {}, "balanced")
    assert ("gpt-4", MODELS["creative"]) in list_models({"gpt-4": "creative", "bad": "nope"})
    assert all(name != "bad" for name, _ in list_models({"bad": "nope"}))


def test_proxy_choice() -> None:
    settings = Settings(_env_file=None, https_proxy="http://p:3128", no_proxy="internal.example")
    assert pick_proxy("wss://sydney.bing.com/sydney/ChatHub", settings) == "http://p:3128"
    assert pick_proxy("https://www.bing.com/x", settings) == "http://p:3128"
    assert pick_proxy("http://www.bing.com/x", settings) is None
    assert pick_proxy("http://127.0.0.1:9/x", settings) is None
    assert pick_proxy("https://api.internal.example/x", settings) is None
    forced = Settings(_env_file=None, bing_proxy="socks5://s:1080", all_proxy="http://a:1")
    assert pick_proxy("ws://127.0.0.1/x", forced) == "socks5://s:1080"
    assert pick_proxy("http://bing.com", Settings(_env_file=None, all_proxy="http://a:1")) == "http://a:1"


def test_access_token_is_fully_url_encoded() -> None:
    url = chathub_url("wss://h/sydney/ChatHub", "a+b/c=")
    assert url == "wss://h/sydney/ChatHub?sec_access_token=a%2Bb%2Fc%3D"
    assert chathub_url("ws://h/x?y=1", "t") == "ws://h/x?y=1&sec_access_token=t"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/v1/chat/completions/", "/v1/chat/completions"), ("/v1/v1/models", "/v1/models"), ("/", "/")],
)
def test_path_tolerance(path: str, expected: str) -> None:
    assert normalize_path(path) == expected
