"""The Bing emulator speaks Bing's create + ChatHub protocol over real loopback sockets."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from emulator import CHAT_FAULTS, CREATE_FAULTS, BingEmulator, EmulatorThread
from emulator.faults import cookie_flags

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


@dataclass
class Created:
    """A parsed create response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body as JSON."""
        return json.loads(self.body)


@dataclass
class Session:
    """A conversation the test created."""

    conversation_id: str
    client_id: str
    token: str


@pytest.fixture(scope="module")
def emu() -> Iterator[BingEmulator]:
    """One emulator for the whole module."""
    with EmulatorThread(ping_interval=0.1, close_wait=1.0) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: BingEmulator) -> Iterator[None]:
    """Start every test without faults."""
    emu.clear_faults()
    emu.faults.slow_seconds = 30.0
    yield
    emu.clear_faults()


def create(emu: BingEmulator, cookie: str = "_U=abc; MUID=1", timeout: float = 5.0,
           port: int | None = None) -> Created:
    """GET the create endpoint with a raw HTTP client (no redirects followed)."""
    url = urlsplit(emu.create_url)
    conn = http.client.HTTPConnection("127.0.0.1", port or url.port, timeout=timeout)
    try:
        return create_on(conn, cookie)
    finally:
        conn.close()


def create_on(conn: http.client.HTTPConnection, cookie: str = "_U=abc; MUID=1") -> Created:
    """GET the create endpoint on an open (possibly reused) connection."""
    conn.request("GET", "/turing/conversation/create?bundleVersion=1.1816.0",
                 headers={"Cookie": cookie, "Accept": "application/json"})
    resp = conn.getresponse()
    return Created(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def new_session(emu: BingEmulator, cookie: str = "_U=abc") -> Session:
    """Create a conversation and return its ids."""
    created = create(emu, cookie)
    body = created.json()
    return Session(body["conversationId"], body["clientId"],
                   created.headers["x-sydney-encryptedconversationsignature"])


def chat_arg(s: Session, text: str, tone: str = "Precise", search: bool = True) -> dict[str, Any]:
    """Build a realistic chat ARG."""
    options = ["nlu_direct_response_filter", "deepleo", "enablemm", "h3precise", "clgalileo"]
    rid = str(uuid.uuid4())
    return {
        "source": "cib", "optionsSets": options + ([] if search else ["nosearchall"]),
        "plugins": [{"id": "c310c353-b9f0-4d76-ab0d-1dd5e979cf68", "category": 1}] if search else [],
        "isStartOfSession": True, "requestId": rid, "tone": tone, "traceId": uuid.uuid4().hex,
        "conversationId": s.conversation_id, "participant": {"id": s.client_id},
        "previousMessages": [{"author": "user", "contextType": "WebPage", "messageType": "Context",
                              "messageId": "discover-web--page-ping-mriduna-----",
                              "description": "[system](#additional_instructions)\nBe terse."}],
        "message": {"author": "user", "inputMethod": "Keyboard", "messageType": "Chat",
                    "text": text, "messageId": rid, "requestId": rid, "locale": "en-US"},
    }


def open_ws(emu: BingEmulator, token: str, handshake: bool = True,
            cookie: str | None = None) -> ClientConnection:
    """Open the ChatHub socket with a URL-encoded token (and a Cookie header if given),
    optionally doing the handshake."""
    headers = {"Cookie": cookie} if cookie is not None else None
    ws = connect(f"{emu.chathub_url}?sec_access_token={quote(token, safe='')}",
                 open_timeout=5, max_size=None, legacy=True, additional_headers=headers)
    if handshake:
        ws.send(HANDSHAKE)
        assert ws.recv(timeout=5) == "{}" + RS
        ws.send('{"type":6}' + RS)
    return ws


def send_chat(ws: ClientConnection, arg: dict[str, Any], invocation: str = "0") -> None:
    """Send one type 4 chat frame."""
    ws.send(json.dumps({"type": 4, "target": "chat", "invocationId": invocation,
                        "arguments": [arg]}) + RS)


def recv_text(ws: ClientConnection, timeout: float = 5.0) -> str:
    """Receive one text message."""
    raw = ws.recv(timeout=timeout)
    assert isinstance(raw, str)
    return raw


def recv_records(ws: ClientConnection, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Receive one message and split it into records."""
    return [json.loads(p) for p in recv_text(ws, timeout).split(RS) if p]


def read_turn(ws: ClientConnection, timeout: float = 5.0) -> list[list[dict[str, Any]]]:
    """Read websocket messages until a type 3 arrives; return records grouped per message."""
    messages: list[list[dict[str, Any]]] = []
    while True:
        records = recv_records(ws, timeout)
        messages.append(records)
        if any(r.get("type") == 3 for r in records):
            return messages


def ask(emu: BingEmulator, text: str, search: bool = True, s: Session | None = None
        ) -> list[list[dict[str, Any]]]:
    """Create (unless given), connect, chat once and return the turn's messages."""
    s = s or new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, text, search=search))
        return read_turn(ws)


def read_until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    """Read records until the socket closes; return them and how it closed."""
    records: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            records += recv_records(ws)
    return records, closed.value


def flat(messages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Flatten grouped records."""
    return [r for group in messages for r in group]


def bot_texts(records: list[dict[str, Any]]) -> list[str]:
    """Return the cumulative answer texts from update records."""
    out = []
    for r in records:
        if r.get("type") == 1 and r.get("target") == "update":
            msgs = r["arguments"][0].get("messages") or []
            if msgs and msgs[0]["author"] == "bot" and "messageType" not in msgs[0]:
                out.append(msgs[0]["text"])
    return out


def final_item(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the type 2 item."""
    return next(r["item"] for r in records if r.get("type") == 2)


def message_types(records: list[dict[str, Any]]) -> set[str]:
    """Return every messageType seen in updates."""
    return {m.get("messageType") for r in records if r.get("type") == 1
            for m in (r["arguments"][0].get("messages") or [])}


# ---------------------------------------------------------------- create

def test_create_success_shape_and_headers(emu: BingEmulator) -> None:
    before = emu.create_count
    created = create(emu)
    assert created.status == 200
    assert created.headers["content-type"].startswith("application/json")
    body = created.json()
    assert re.fullmatch(r"51D\|BingProd\|[0-9A-F]{64}", body["conversationId"])
    assert body["clientId"].isdigit() and len(body["clientId"]) >= 16
    assert body["result"] == {"value": "Success", "message": None}
    token = created.headers["x-sydney-encryptedconversationsignature"]
    assert all(c in token for c in "+/=")
    assert created.headers["x-sydney-conversationsignature"]
    anonymous = create(emu, cookie="MUID=123").json()
    assert anonymous["conversationId"].startswith("51D|BingProdUnAuthenticatedUsers|")
    assert emu.create_count == before + 2


@pytest.mark.parametrize("fault", sorted(CREATE_FAULTS - {"slow"}))
def test_create_faults(emu: BingEmulator, fault: str) -> None:
    emu.faults.create = fault
    emu.faults.times = 1
    created = create(emu)
    sig = created.headers.get("x-sydney-encryptedconversationsignature")
    if fault in ("unauthorized", "forbidden", "internal"):
        value = {"unauthorized": "UnauthorizedRequest", "forbidden": "Forbidden",
                 "internal": "InternalServerError"}[fault]
        assert created.status == 200 and created.json()["result"]["value"] == value
    elif fault == "missing_signature":
        assert created.json()["result"]["value"] == "Success" and sig is None
    elif fault == "missing_ids":
        assert "clientId" not in created.json() and sig
    elif fault == "html":
        assert created.headers["content-type"].startswith("text/html")
        assert b'_G={Region:"TR"' in created.body
    elif fault == "redirect_cn":
        assert created.status == 302
        assert urlsplit(created.headers["location"]).hostname == "cn.bing.com"
    elif fault == "empty":
        assert created.status == 200 and created.body == b""
    else:
        assert created.status == int(fault[4:])
    assert emu.faults.create is None  # times=1 consumed it
    assert create(emu).json()["result"]["value"] == "Success"


def test_create_slow_times_out_client(emu: BingEmulator) -> None:
    emu.faults.slow_seconds = 5.0
    emu.faults.create = "slow"
    started = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        create(emu, timeout=0.3)
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- chat

def test_normal_answer_record_sequence(emu: BingEmulator) -> None:
    s = new_session(emu)
    conns_before = len(emu.connections)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "What is the emulator? emulate:words=60"), invocation="3")
        messages = read_turn(ws)
    records = flat(messages)
    first = records[0]
    assert first["type"] == 1 and first["arguments"][0]["throttling"] == {
        "maxNumUserMessagesInConversation": 30, "numUserMessagesInConversation": 1,
        "maxNumLongDocSummaryUserMessagesInConversation": 5,
        "numLongDocSummaryUserMessagesInConversation": 0}
    assert any(r.get("target") == "someNewTarget" for r in records)
    assert {"InternalSearchQuery", "InternalSearchResult", "InternalLoaderMessage",
            "InternalTasksMessage"} <= message_types(records)
    texts = bot_texts(records)
    assert len(texts) > 5
    assert all(b.startswith(a) and len(b) >= len(a) for a, b in itertools.pairwise(texts))
    assert any(len(group) > 1 for group in messages[:-1])
    last = messages[-1]
    assert [r["type"] for r in last] == [2, 3] and last[1]["invocationId"] == "3"
    item = last[0]["item"]
    assert item["result"]["value"] == "Success" and item["firstNewMessageIndex"] == 1
    user, *middle, bot = item["messages"]
    assert user["author"] == "user" and "What is the emulator?" in user["text"]
    assert {m["messageType"] for m in middle} == {"InternalSearchQuery", "InternalSearchResult"}
    assert bot["text"] == texts[-1] and "[^1^]" in bot["text"] and "[^2^]" in bot["text"]
    assert bot["text"].startswith("This answer comes from the Bing Chat API emulator")
    assert "Tone: Precise; web search: on;" in bot["text"]
    assert bot["adaptiveCards"][0]["body"][0]["text"].startswith("[1]: https://example.com/")
    assert len(bot["sourceAttributions"]) == 3 and len(bot["suggestedResponses"]) == 3
    assert emu.chat_requests[-1]["tone"] == "Precise"
    assert len(emu.connections) == conns_before + 1
    record = emu.connections[-1]
    assert emu.wait_for(lambda: record.closed_at is not None, 2)
    assert record.completed and not record.closed_early_by_client
    assert record.answer_text == bot["text"] == record.sent_text


def test_answer_is_deterministic_per_prompt(emu: BingEmulator) -> None:
    one = final_item(flat(ask(emu, "same prompt", search=False)))["messages"][-1]["text"]
    two = final_item(flat(ask(emu, "same prompt", search=False)))["messages"][-1]["text"]
    assert one == two


def test_search_off_has_no_search_messages(emu: BingEmulator) -> None:
    records = flat(ask(emu, "offline please", search=False))
    assert not {"InternalSearchQuery", "InternalSearchResult"} & message_types(records)
    bot = final_item(records)["messages"][-1]
    assert "[^" not in bot["text"] and "web search: off" in bot["text"]
    assert "context: 44 characters" in bot["text"]
    assert bot["sourceAttributions"] == []


def test_signature_mismatch_is_unauthorized(emu: BingEmulator) -> None:
    mine, other = new_session(emu), new_session(emu)
    with open_ws(emu, other.token) as ws:
        send_chat(ws, chat_arg(mine, "hi"))
        messages = read_turn(ws)
    assert [r["type"] for r in messages[-1]] == [2, 3]
    item = messages[-1][0]["item"]
    assert "messages" not in item
    assert item["result"]["value"] == item["result"]["error"] == "UnauthorizedRequest"


def test_wrong_participant_is_unauthorized(emu: BingEmulator) -> None:
    s = new_session(emu)
    arg = chat_arg(s, "hi")
    arg["participant"] = {"id": "123"}
    with open_ws(emu, s.token) as ws:
        send_chat(ws, arg)
        assert final_item(flat(read_turn(ws)))["result"]["value"] == "UnauthorizedRequest"


def test_expired_conversation_is_invalid_session(emu: BingEmulator) -> None:
    s = new_session(emu)
    emu.expire_conversations()
    item = final_item(flat(ask(emu, "hi", s=s)))
    assert item["result"]["value"] == "InvalidSession"
    assert "expire after 06:00:00" in item["result"]["message"]


def test_chat_before_handshake_gets_type7(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token, handshake=False) as ws:
        send_chat(ws, chat_arg(s, "hi"))
        assert recv_records(ws)[0]["type"] == 7
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


@pytest.mark.parametrize("fault,value", [
    ("throttled", "Throttled"), ("captcha", "CaptchaChallenge"),
    ("unauthorized", "UnauthorizedRequest"), ("invalid_session", "InvalidSession"),
    ("forbidden", "Forbidden"), ("internal_error", "InternalServerError")])
def test_error_faults(emu: BingEmulator, fault: str, value: str) -> None:
    emu.faults.chat = fault
    started = time.monotonic()
    messages = ask(emu, "hi")
    assert time.monotonic() - started < 1
    assert len(messages) == 1 and [r["type"] for r in messages[0]] == [2, 3]
    result = messages[0][0]["item"]["result"]
    assert result["value"] == result["error"] == value and result["message"]
    assert "messages" not in messages[0][0]["item"]


def test_throttled_by_directive_only_affects_that_request(emu: BingEmulator) -> None:
    assert final_item(flat(ask(emu, "emulate:throttled hi")))["result"]["value"] == "Throttled"
    assert final_item(flat(ask(emu, "hi")))["result"]["value"] == "Success"


def test_close7_fault(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi emulate:close7"))
        records: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                records += recv_records(ws)
    assert bot_texts(records) and records[-1]["type"] == 7
    assert records[-1]["allowReconnect"] is True and closed.value.rcvd is not None


def test_drop_fault_aborts_without_close_frame(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi emulate:drop"))
        records: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                records += recv_records(ws)
    assert closed.value.rcvd is None
    texts = bot_texts(records)
    assert texts and not any(r.get("type") == 2 for r in records)
    record = emu.connections[-1]
    assert len(texts[-1]) < len(record.answer_text) and not record.closed_early_by_client


def test_no_final_fault_closes_normally_without_type2(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi emulate:no_final"))
        records: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                records += recv_records(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert bot_texts(records)[-1] == emu.connections[-1].answer_text
    assert not {2, 3} & {r["type"] for r in records}


def test_stall_fault_goes_silent(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi emulate:stall"))
        texts: list[str] = []
        with pytest.raises(TimeoutError):
            while True:
                texts += bot_texts(recv_records(ws, 0.5))
    assert texts
    record = emu.connections[-1]
    assert emu.wait_for(lambda: record.closed_at is not None, 2)
    assert record.closed_early_by_client and not record.completed


@pytest.mark.parametrize("fault", ["retract", "apology_start", "disengaged", "turn_limit",
                                   "restart", "shrink", "empty_message"])
def test_stream_faults_end_with_success(emu: BingEmulator, fault: str) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, f"hi emulate:{fault}"))
        raws: list[str] = []
        while not raws or '"type":3' not in raws[-1]:
            raws.append(recv_text(ws))
    records = [json.loads(p) for raw in raws for p in raw.split(RS) if p]
    item = final_item(records)
    assert item["result"]["value"] == "Success"
    last, texts = item["messages"][-1], bot_texts(records)
    if fault in ("retract", "apology_start"):
        assert last["contentOrigin"] == "Apology" and last["text"].startswith("Sorry!")
    elif fault == "disengaged":
        assert last["messageType"] == "Disengaged"
    elif fault == "turn_limit":
        assert last["contentOrigin"] == "TurnLimiter"
    elif fault == "restart":
        ids = [r["arguments"][0]["messages"][0]["messageId"] for r in records
               if r.get("type") == 1 and "messages" in r["arguments"][0]
               and "messageType" not in r["arguments"][0]["messages"][0]]
        assert len(set(ids)) == 2 and texts[-1] == last["text"]
    elif fault == "shrink":
        assert any(len(b) < len(a) for a, b in itertools.pairwise(texts))
    else:
        assert "" in raws
    assert emu.connections[-1].fault == fault


def test_anonymous_turn_limit(emu: BingEmulator) -> None:
    s = new_session(emu, cookie="MUID=1")
    for turn in range(1, 6):
        item = final_item(flat(ask(emu, "hi emulate:words=5", s=s)))
        assert item["throttling"]["numUserMessagesInConversation"] == turn
        assert item["throttling"]["maxNumUserMessagesInConversation"] == 5
    item = final_item(flat(ask(emu, "hi", s=s)))
    assert item["messages"][-1]["contentOrigin"] == "TurnLimiter"
    assert "reached my limit" in item["messages"][-1]["text"]


def test_think_sends_pings_before_text(emu: BingEmulator) -> None:
    records = flat(ask(emu, "hi emulate:think=0.35", search=False))
    first_text = next(i for i, r in enumerate(records) if bot_texts([r]))
    assert sum(1 for r in records[:first_text] if r == {"type": 6}) >= 2


def test_words_directive_sets_length(emu: BingEmulator) -> None:
    text = final_item(flat(ask(emu, "long one emulate:words=300 emulate:chunk=25")))
    assert 290 <= len(text["messages"][-1]["text"].split()) <= 310


def test_upgrade_fault_rejects_websocket(emu: BingEmulator) -> None:
    s = new_session(emu)
    emu.faults.upgrade = 403
    with pytest.raises(InvalidStatus) as rejected:
        open_ws(emu, s.token)
    assert rejected.value.response.status_code == 403
    assert emu.faults.upgrade == 403  # times=None: stays until cleared
    emu.clear_faults()
    open_ws(emu, s.token).close()


def test_client_closing_early_is_recorded(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "long emulate:words=2000 emulate:delay=0.02"))
        ws.recv(timeout=5)
        ws.recv(timeout=5)
    record = emu.connections[-1]
    assert emu.wait_for(lambda: record.closed_at is not None, 2)
    assert record.closed_early_by_client and not record.completed
    assert len(record.sent_text) < len(record.answer_text)


def test_fault_names_are_validated(emu: BingEmulator) -> None:
    with pytest.raises(ValueError):
        emu.faults.chat = "no_such_fault"
    assert "drop" in CHAT_FAULTS and "html" in CREATE_FAULTS


# ---------------------------------------------------------------- fault rates

def test_rates_are_validated_and_cleared(emu: BingEmulator) -> None:
    for name in ("create_failure_rate", "drop_rate", "drop_before_text_rate"):
        with pytest.raises(ValueError):
            setattr(emu.faults, name, 1.5)
        with pytest.raises(ValueError):
            setattr(emu.faults, name, -0.1)
        setattr(emu.faults, name, 0.25)
    emu.clear_faults()
    assert (emu.faults.create_failure_rate, emu.faults.drop_rate,
            emu.faults.drop_before_text_rate) == (0.0, 0.0, 0.0)


def test_seed_makes_the_draws_reproducible() -> None:
    assert BingEmulator(seed=7).random.random() == BingEmulator(seed=7).random.random()
    assert BingEmulator(seed=7).random.random() != BingEmulator(seed=8).random.random()


def create_outcomes(emu: BingEmulator, n: int) -> list[int]:
    """Statuses of N creates over one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.http_port, timeout=5)
    try:
        return [create_on(conn).status for _ in range(n)]
    finally:
        conn.close()


def test_create_failure_rate_answers_http_500_for_its_share(emu: BingEmulator) -> None:
    emu.faults.create_failure_rate = 0.25
    emu.random.seed(1234)
    counted = emu.fault_counts["create:http500"]
    first = create_outcomes(emu, 200)
    assert set(first) == {200, 500} and 25 <= first.count(500) <= 75
    assert emu.fault_counts["create:http500"] == counted + first.count(500)
    emu.random.seed(1234)
    assert create_outcomes(emu, 200) == first  # the same seed, the same failures
    emu.faults.create_failure_rate = 1.0
    assert create_outcomes(emu, 3) == [500] * 3
    emu.faults.create, emu.faults.times = "html", 1  # a switched fault wins over the rate
    assert create(emu).headers["content-type"].startswith("text/html")
    emu.faults.create_failure_rate = 0.0
    assert create_outcomes(emu, 3) == [200] * 3


def test_drop_rate_aborts_after_some_text(emu: BingEmulator) -> None:
    emu.faults.drop_rate = 1.0
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi"))
        records, closed = read_until_closed(ws)
    assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None
    texts, record = bot_texts(records), emu.connections[-1]
    assert texts and not any(r.get("type") == 2 for r in records)
    assert len(texts[-1]) < len(record.answer_text) and record.fault == "drop"
    assert emu.wait_for(lambda: record.closed_at is not None, 2) and not record.completed


def test_drop_before_text_rate_aborts_before_any_text(emu: BingEmulator) -> None:
    emu.faults.drop_before_text_rate = 1.0
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi"))
        records, closed = read_until_closed(ws)
    assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None
    assert records and not bot_texts(records)  # the search prelude came, no answer text
    assert not any(r.get("type") == 2 for r in records)
    assert emu.connections[-1].fault == "drop_start" and emu.connections[-1].sent_text == ""


def test_drop_start_is_also_a_directive(emu: BingEmulator) -> None:
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi emulate:drop_start"))
        records, closed = read_until_closed(ws)
    assert closed.rcvd is None and not bot_texts(records)


def test_drop_rates_share_one_draw_and_spare_decided_chats(emu: BingEmulator) -> None:
    emu.faults.drop_rate = emu.faults.drop_before_text_rate = 0.5  # every chat drops somehow
    emu.random.seed(99)
    expected = ["drop_start" if random.Random(99).random() < 0.5 else "drop"]
    s = new_session(emu)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, chat_arg(s, "hi"))
        read_until_closed(ws)
    assert [emu.connections[-1].fault] == expected
    # a directive decides its chat: no draw, no drop
    assert final_item(flat(ask(emu, "emulate:throttled hi")))["result"]["value"] == "Throttled"
    assert emu.connections[-1].fault == "throttled"


# ---------------------------------------------------------------- account cookie flags

def test_cookie_flags_are_parsed_from_the_cookie_header() -> None:
    assert cookie_flags("_U=x; emulate=throttled") == {"throttled"}
    assert cookie_flags('a=1;emulate="Captcha, expired" ;emulate=bogus') == {"captcha", "expired"}
    assert cookie_flags("_U=emulate=throttled; xemulate=captcha; emulate") == frozenset()


def test_expired_account_cannot_create(emu: BingEmulator) -> None:
    before, counted = emu.create_count, emu.fault_counts["create:account:expired"]
    emu.faults.create, emu.faults.times = "http500", 1
    created = create(emu, cookie="_U=y; emulate=expired")
    assert created.status == 200
    result = created.json()["result"]
    assert result["value"] == "UnauthorizedRequest" and result["message"]
    assert "x-sydney-encryptedconversationsignature" not in created.headers
    assert emu.create_count == before + 1
    assert emu.fault_counts["create:account:expired"] == counted + 1
    assert emu.faults.create == "http500"  # the account's flag consumed no fault use
    assert create(emu).status == 500


@pytest.mark.parametrize(("flag", "value"), [("throttled", "Throttled"),
                                             ("captcha", "CaptchaChallenge")])
def test_flagged_account_creates_but_every_chat_fails(emu: BingEmulator, flag: str,
                                                      value: str) -> None:
    s = new_session(emu, cookie=f"_U=x; emulate={flag}")  # the socket below sends no cookie
    conversation = emu.conversations[s.conversation_id]
    assert conversation.flags == {flag} and conversation.signed_in
    emu.faults.chat, emu.faults.times = "drop", 1
    counted = emu.fault_counts[f"chat:account:{flag}"]
    for _ in range(2):
        messages = ask(emu, "hi", s=s)
        assert len(messages) == 1 and [r["type"] for r in messages[0]] == [2, 3]
        result = messages[0][0]["item"]["result"]
        assert result["value"] == result["error"] == value and result["message"]
        assert emu.connections[-1].fault == f"account:{flag}"
    assert emu.faults.chat == "drop"  # flags outrank switches and consume no use
    assert emu.fault_counts[f"chat:account:{flag}"] == counted + 2
    emu.clear_faults()
    assert final_item(flat(ask(emu, "hi")))["result"]["value"] == "Success"  # others unaffected


@pytest.mark.parametrize(("flag", "value"), [("throttled", "Throttled"),
                                             ("captcha", "CaptchaChallenge"),
                                             ("expired", "UnauthorizedRequest")])
def test_flags_on_the_websocket_cookie_are_honoured(emu: BingEmulator, flag: str,
                                                    value: str) -> None:
    s = new_session(emu, cookie="_U=abc")
    with open_ws(emu, s.token, cookie=f"_U=abc; emulate={flag}") as ws:
        send_chat(ws, chat_arg(s, "hi"))
        assert final_item(flat(read_turn(ws)))["result"]["value"] == value
    assert emu.connections[-1].flags == {flag}
    with open_ws(emu, s.token, cookie="_U=abc") as ws:  # the conversation itself is fine
        send_chat(ws, chat_arg(s, "hi emulate:words=5"))
        assert final_item(flat(read_turn(ws)))["result"]["value"] == "Success"


def test_expired_outranks_captcha_outranks_throttled(emu: BingEmulator) -> None:
    s = new_session(emu, cookie="_U=x; emulate=throttled")
    with open_ws(emu, s.token, cookie="_U=x; emulate=captcha") as ws:
        send_chat(ws, chat_arg(s, "hi"))
        assert final_item(flat(read_turn(ws)))["result"]["value"] == "CaptchaChallenge"
    with open_ws(emu, s.token, cookie="_U=x; emulate=expired,throttled") as ws:
        send_chat(ws, chat_arg(s, "hi"))
        assert final_item(flat(read_turn(ws)))["result"]["value"] == "UnauthorizedRequest"


# ---------------------------------------------------------------- stats and record caps

def get_stats(emu: BingEmulator, port: int | None = None) -> dict[str, int]:
    """GET /_emulator/stats (on the keep-alive HTTP port unless PORT is given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port or emu.http_port, timeout=5)
    try:
        conn.request("GET", "/_emulator/stats")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("application/json")
        stats: dict[str, int] = json.loads(resp.read())
        return stats
    finally:
        conn.close()


def test_stats_endpoint_counts_creates_chats_and_continuations(emu: BingEmulator) -> None:
    before = get_stats(emu)
    assert set(before) == {"creates", "chats", "connections", "continued_chats", "copilot_starts",
                           "copilot_chats", "copilot_continued_chats"}
    s = new_session(emu)
    ask(emu, "first emulate:words=5", s=s)
    with open_ws(emu, s.token) as ws:
        send_chat(ws, dict(chat_arg(s, "second emulate:words=5"), isStartOfSession=False), "1")
        read_turn(ws)
    after = get_stats(emu)
    assert after == {"creates": before["creates"] + 1, "chats": before["chats"] + 2,
                     "connections": before["connections"] + 2,
                     "continued_chats": before["continued_chats"] + 1,
                     "copilot_starts": before["copilot_starts"],
                     "copilot_chats": before["copilot_chats"],
                     "copilot_continued_chats": before["copilot_continued_chats"]}
    assert after["creates"] == emu.create_count


def test_keep_records_caps_history_but_not_counters() -> None:
    with EmulatorThread(keep_records=2, close_wait=0.2) as small:
        sessions = [new_session(small) for _ in range(3)]
        for s in sessions[1:]:
            ask(small, "hi emulate:words=3", search=False, s=s)
        ask(small, "again emulate:words=3", search=False, s=sessions[-1])
        assert len(small.conversations) == 3  # conversations outlive request records (100 x N)
        assert sessions[0].conversation_id in small.conversations
        assert len(small.chat_requests) == 2 and len(small.connections) == 2
        assert small.chat_requests[-1]["message"]["text"].startswith("again")
        assert get_stats(small) == {"creates": 3, "chats": 3, "connections": 3,
                                    "continued_chats": 0, "copilot_starts": 0, "copilot_chats": 0,
                                    "copilot_continued_chats": 0}
    with pytest.raises(ValueError):
        BingEmulator(keep_records=0)


# ---------------------------------------------------------------- keep-alive HTTP server

def read_response(f: Any) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length-framed response from a socket file: status, headers, body."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def raw_socket(emu: BingEmulator) -> socket.socket:
    """A plain TCP connection to the keep-alive HTTP port."""
    return socket.create_connection(("127.0.0.1", emu.http_port), timeout=5)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (EOF within the socket timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_urls_and_ports(emu: BingEmulator) -> None:
    assert emu.http_port != emu.port
    assert emu.create_url == f"http://127.0.0.1:{emu.http_port}/turing/conversation/create"
    assert emu.stats_url == f"http://127.0.0.1:{emu.http_port}/_emulator/stats"
    assert emu.chathub_url == f"ws://127.0.0.1:{emu.port}/sydney/ChatHub"


def test_two_creates_share_one_kept_alive_connection(emu: BingEmulator) -> None:
    before = emu.http_connections
    conn = http.client.HTTPConnection("127.0.0.1", emu.http_port, timeout=5)
    try:
        first = create_on(conn)
        sock = conn.sock
        second = create_on(conn)
        assert conn.sock is sock and sock is not None  # http.client reconnects if the peer closed
    finally:
        conn.close()
    assert first.status == second.status == 200
    assert "connection" not in first.headers and int(first.headers["content-length"]) > 0
    assert first.json()["conversationId"] != second.json()["conversationId"]
    assert emu.http_connections == before + 1


def test_pooled_httpx_client_opens_one_connection(emu: BingEmulator) -> None:
    before_conns, before_creates = emu.http_connections, emu.create_count
    with httpx.Client(timeout=5) as client:
        for _ in range(5):
            response = client.get(emu.create_url, headers={"Cookie": "_U=abc"})
            assert response.status_code == 200
            assert response.headers["x-sydney-encryptedconversationsignature"]
        stats = client.get(emu.stats_url).json()
    assert emu.http_connections == before_conns + 1
    assert stats["creates"] == before_creates + 5 == emu.create_count


def test_connection_close_is_honoured(emu: BingEmulator) -> None:
    with raw_socket(emu) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /turing/conversation/create HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\nCookie: _U=abc\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body)["result"]["value"] == "Success"
        assert f.read() == b""  # EOF: the server closed


@pytest.mark.parametrize("connection,kept", [(b"", False), (b"Connection: keep-alive\r\n", True)])
def test_http10_closes_unless_keep_alive_asked(emu: BingEmulator, connection: bytes,
                                               kept: bool) -> None:
    request = b"GET /_emulator/stats HTTP/1.0\r\n" + connection + b"\r\n"
    with raw_socket(emu) as sock, sock.makefile("rb") as f:
        sock.sendall(request)
        status, headers, _ = read_response(f)
        assert status == 200
        assert headers["connection"] == ("keep-alive" if kept else "close")
        if kept:
            sock.sendall(request)
            assert read_response(f)[0] == 200
        else:
            assert f.read() == b""


def test_pipelined_requests_bodies_and_404_keep_the_connection(emu: BingEmulator) -> None:
    before = emu.http_connections
    with raw_socket(emu) as sock, sock.makefile("rb") as f:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 11\r\n\r\nhello=world"
                     b"POST /turing/conversation/create HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"
                     b"GET /_emulator/stats?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /turing/conversation/create HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[0] == 404
        status, headers, _ = read_response(f)
        assert status == 405 and headers["allow"] == "GET"
        status, _, body = read_response(f)
        assert status == 200 and "creates" in json.loads(body)
        status, headers, body = read_response(f)
        assert status == 200 and headers["x-sydney-encryptedconversationsignature"]
        assert json.loads(body)["conversationId"].startswith("51D|BingProdUnAuthenticatedUsers|")
    assert emu.http_connections == before + 1


def test_every_create_fault_over_one_kept_alive_connection(emu: BingEmulator) -> None:
    emu.faults.slow_seconds = 0.2
    before = emu.http_connections
    conn = http.client.HTTPConnection("127.0.0.1", emu.http_port, timeout=5)
    try:
        for fault in sorted(CREATE_FAULTS):
            emu.faults.create, emu.faults.times = fault, 1
            created = create_on(conn)
            if fault == "redirect_cn":
                assert created.status == 302 and created.body == b""
                assert created.headers["location"].startswith("https://cn.bing.com/")
            elif fault == "empty":
                assert created.status == 200 and created.body == b""
                assert created.headers["content-length"] == "0"
            elif fault == "slow":
                assert created.json()["result"]["value"] == "Success"
            assert "content-length" in created.headers
            assert create_on(conn).json()["result"]["value"] == "Success"
    finally:
        conn.close()
    assert emu.http_connections == before + 1


def test_slow_create_does_not_block_other_connections(emu: BingEmulator) -> None:
    emu.faults.slow_seconds = 1.5
    emu.faults.create, emu.faults.times = "slow", 1
    slow = http.client.HTTPConnection("127.0.0.1", emu.http_port, timeout=5)
    try:
        slow.request("GET", "/turing/conversation/create", headers={"Cookie": "_U=abc"})
        assert emu.wait_for(lambda: emu.faults.create is None, 2)  # the slow one took the fault
        started = time.monotonic()
        assert create(emu).json()["result"]["value"] == "Success"
        assert time.monotonic() - started < 0.5
        resp = slow.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["result"]["value"] == "Success"
        assert time.monotonic() - started > 1.0
    finally:
        slow.close()


@pytest.mark.parametrize("shape", ["one long header", "many headers"])
def test_oversized_headers_get_431_and_close(emu: BingEmulator, shape: str) -> None:
    if shape == "one long header":
        extra = b"X-Big: " + b"a" * 20_000 + b"\r\n"
    else:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 90) for i in range(200))
    before = emu.create_count
    with raw_socket(emu) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /turing/conversation/create HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        status, headers, _ = read_response(f)
        assert status == 431 and headers["connection"] == "close"
        assert f.read() == b""
    assert emu.create_count == before
    assert create(emu).status == 200  # the server is fine afterwards


@pytest.mark.parametrize("request_line,status", [
    (b"GARBAGE\r\n\r\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\n", 400)])
def test_malformed_requests_are_refused_and_closed(emu: BingEmulator, request_line: bytes,
                                                   status: int) -> None:
    with raw_socket(emu) as sock, sock.makefile("rb") as f:
        sock.sendall(request_line)
        got, headers, _ = read_response(f)
        assert got == status and headers["connection"] == "close"


def test_idle_connections_are_closed() -> None:
    with EmulatorThread(http_idle_timeout=0.3) as small, \
            socket.create_connection(("127.0.0.1", small.http_port), timeout=3) as sock:
        sock.sendall(b"GET /_emulator/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        with sock.makefile("rb") as f:
            assert read_response(f)[0] == 200
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert 0.2 < time.monotonic() - started < 2


def test_stop_closes_open_keep_alive_connections() -> None:
    thread = EmulatorThread()
    small = thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", small.http_port, timeout=3)
        assert create_on(conn).status == 200
        sock = conn.sock
        assert sock is not None
    finally:
        thread.stop()
    assert closed_by_peer(sock)
    conn.close()


def test_old_urls_on_the_websocket_port_still_answer(emu: BingEmulator) -> None:
    created = create(emu, port=emu.port)
    assert created.status == 200 and created.headers["x-sydney-encryptedconversationsignature"]
    assert created.headers["connection"].lower() == "close"
    emu.faults.create, emu.faults.times = "redirect_cn", 1
    redirected = create(emu, port=emu.port)
    assert redirected.status == 302 and redirected.headers["location"].startswith("https://cn.")
    assert get_stats(emu, port=emu.port) == get_stats(emu)
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    try:
        conn.request("GET", "/nowhere")
        assert conn.getresponse().status == 404
    finally:
        conn.close()


def test_conversations_are_capped_far_above_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import emulator.server

    monkeypatch.setattr(emulator.server, "CONVERSATIONS_PER_RECORD", 2)
    with EmulatorThread(keep_records=1, close_wait=0.2) as small:
        sessions = [new_session(small) for _ in range(3)]
        assert len(small.conversations) == 2
        assert sessions[0].conversation_id not in small.conversations
