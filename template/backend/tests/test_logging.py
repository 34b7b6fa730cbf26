"""Log formats and the request id on every line."""

import io
import json
import logging
import sys

import pytest

from app.core.logging import (
    TEXT_FORMAT,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    request_id_var,
)


def render(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    RequestIdFilter().filter(record)
    return formatter.format(record)


def make_record(message: str = "hello %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord("app.test", logging.INFO, __file__, 1, message, args, None)


def test_json_line_carries_the_request_id() -> None:
    token = request_id_var.set("abc123")
    try:
        line = render(JsonFormatter(), make_record("hello %s", "world"))
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "hello world"
    assert entry["request_id"] == "abc123"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "app.test"
    assert entry["time"].endswith("+00:00")


def test_json_line_includes_exception_and_stack() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    record.stack_info = "Stack (most recent call last)"
    entry = json.loads(render(JsonFormatter(), record))
    assert "ValueError: boom" in entry["exception"]
    assert entry["stack"] == "Stack (most recent call last)"
    assert entry["request_id"] == "-"


def test_text_line_carries_the_request_id() -> None:
    token = request_id_var.set("req-7")
    try:
        line = render(logging.Formatter(TEXT_FORMAT), make_record("plain"))
    finally:
        request_id_var.reset(token)
    assert "[req-7] app.test: plain" in line


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("value %s, count %d", ("a\nforged", 7)),
        ("value %(value)s, count %(count)d", ({"value": "a\nforged", "count": 7},)),
    ],
    ids=["positional", "mapping"],
)
def test_text_line_escapes_the_values_a_message_puts_in(
    message: str, args: tuple[object, ...]
) -> None:
    line = render(TextFormatter(TEXT_FORMAT), make_record(message, *args))
    assert line.endswith("app.test: value a\\x0aforged, count 7")


def test_text_line_keeps_the_lines_a_message_is_written_with() -> None:
    # As uvicorn logs a failed start-up: the traceback is the message itself.
    traceback = 'Traceback (most recent call last):\n  File "x.py"\nValueError: boom'
    lines = render(TextFormatter(TEXT_FORMAT), make_record(traceback)).splitlines()
    assert lines[1:] == ['  File "x.py"', "ValueError: boom"]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_routes_everything_through_one_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
    configure_logging("WARNING", "json")
    configure_logging("INFO", "json")  # reconfiguring replaces, never duplicates

    logging.getLogger("uvicorn.error").info("server line")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "server line"
    assert not logging.getLogger("uvicorn.error").handlers
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()
