"""The log formats, request ids, and the status page's window of recent requests."""

from __future__ import annotations

import json
import logging

import pytest

from apis.recent import RecentRequests
from apis.requestlog import format_fields, request_id_from
from utils.logging import JsonFormatter, RequestIdFilter, TextFormatter, make_handler
from utils.settings import Settings
from utils.tracking import CURRENT, RequestRecord, note_account, note_error, note_model


def make_record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("apis.requests", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    RequestIdFilter().filter(record)
    return record


def test_json_lines_carry_the_request_fields() -> None:
    fields = {"request_id": "abc", "status": 200, "model": "precise", "account": "a-1", "ttft_ms": 12.5}
    entry = json.loads(JsonFormatter().format(make_record("request ...", fields=fields)))
    assert entry["level"] == "INFO" and entry["logger"] == "apis.requests" and entry["ts"].endswith("+00:00")
    assert {key: entry[key] for key in fields} == fields


def test_lines_logged_inside_a_request_name_its_id() -> None:
    token = CURRENT.set(RequestRecord("rid-7", "POST", "/v1/chat/completions"))
    try:
        inside = make_record("upstream failure: x")
    finally:
        CURRENT.reset(token)
    assert TextFormatter().format(inside).endswith("upstream failure: x request_id=rid-7")
    assert json.loads(JsonFormatter().format(inside))["request_id"] == "rid-7"
    outside = make_record("started")
    assert "request_id" not in TextFormatter().format(outside)
    assert "request_id" not in json.loads(JsonFormatter().format(outside))


def test_notes_fill_the_current_record_and_are_ignored_outside_requests() -> None:
    note_account("nobody")  # no request: nothing happens
    record = RequestRecord("r", "POST", "/chat/completions")
    token = CURRENT.set(record)
    try:
        note_model("creative", True)
        note_account("first")
        note_account("second")
        note_error("upstream_closed", in_band=True)
    finally:
        CURRENT.reset(token)
    assert (record.model, record.stream, record.account, record.attempts) == ("creative", True, "second", 2)
    assert record.error_code == "upstream_closed" and record.in_band_error


def test_text_fields_leave_out_empty_values() -> None:
    line = format_fields({"request_id": "r", "status": 200, "account": None, "stream": True, "error": None})
    assert line == "request_id=r status=200 stream=true"


@pytest.mark.parametrize(
    ("supplied", "kept"),
    [
        (b"trace-1", True),
        (b"a.b:c_d-9", True),
        (b"", False),
        (b"-leading", False),
        (b"x" * 65, False),
        (b"sp ace", False),
        (b"new\nline", False),
    ],
)
def test_client_request_ids_are_kept_only_when_sane(supplied: bytes, kept: bool) -> None:
    got = request_id_from({"headers": [(b"x-request-id", supplied)]})
    assert (got == supplied.decode()) is kept
    assert len(got) <= 64


def test_recent_requests_count_within_the_window() -> None:
    recent = RecentRequests(window=300)
    recent.add({"status": 200, "model": "precise", "error": None}, now=1000.0)
    recent.add({"status": 429, "model": "balanced", "error": "rate_limit_exceeded"}, now=1100.0)
    recent.add({"status": 200, "model": "precise", "error": None}, now=1250.0)
    summary = recent.summary(now=1260.0)
    assert summary["total"] == 3
    assert summary["by_status"] == {"200": 2, "429": 1}
    assert summary["by_error"] == {"rate_limit_exceeded": 1}
    assert summary["by_model"] == {"balanced": 1, "precise": 2}
    assert [entry["at"] for entry in summary["latest"]] == [1250.0, 1100.0, 1000.0]
    later = recent.summary(now=1380.0)  # the first minute has left the window
    assert later["total"] == 2 and [entry["at"] for entry in later["latest"]] == [1250.0, 1100.0]
    assert recent.summary(now=5000.0)["total"] == 0


def test_log_format_setting() -> None:
    assert Settings(_env_file=None).log_format == "text"
    assert isinstance(
        make_handler(Settings(_env_file=None, log_format="json").log_format).formatter, JsonFormatter
    )
    with pytest.raises(ValueError):
        Settings(_env_file=None, log_format="xml")
