"""The access token's escaping in socket URLs: exactly `quote(text, safe='')`, only faster."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest

from networks.chathub_ws import chathub_url, escape_all

CHARACTERS = [chr(code) for code in range(128)] + ["é", "€", "😀", "%41"]


def test_every_ascii_character_is_escaped_as_quote_does() -> None:
    every = "".join(chr(code) for code in range(128))
    assert escape_all(every) == quote(every, safe="")


@pytest.mark.parametrize("seed", range(5))
def test_random_texts_escape_as_quote_does(seed: int) -> None:
    draw = random.Random(seed)
    for _ in range(500):
        text = "".join(draw.choice(CHARACTERS) for _ in range(draw.randint(0, 60)))
        assert escape_all(text) == quote(text, safe="")


def test_a_percent_sign_is_escaped_once() -> None:
    assert escape_all("a%2Fb+c") == "a%252Fb%2Bc"


def test_the_token_lands_in_the_query_escaped() -> None:
    url = chathub_url("wss://sydney.bing.com/sydney/ChatHub", "ab/c+d=")
    assert url == "wss://sydney.bing.com/sydney/ChatHub?sec_access_token=ab%2Fc%2Bd%3D"
    assert chathub_url("ws://h/x?a=1", "t").endswith("?a=1&sec_access_token=t")
