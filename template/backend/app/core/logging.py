"""Logging: readable text for people, one JSON object per line for collectors.

Every line carries the id of the request that produced it (`-` outside a request),
taken from a context variable that the request middleware sets.
"""

import copy
import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)-8s [%(request_id)s] %(name)s: %(message)s"

# Control characters and Unicode line separators, as they may arrive in a path, query
# or header: escaped, they cannot end a log line early and forge the next one.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE
}


def escape_controls(text: str) -> str:
    """`text` on one line, its control characters written as escapes."""
    return text.translate(_ESCAPES)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; no third-party dependency."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        # JSON allows Unicode line separators raw; line-based readers split on them.
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class _Escaped:
    """A value put into a message, written with its control characters escaped."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_controls(str(self.value))

    def __repr__(self) -> str:
        return escape_controls(repr(self.value))


def _escaped(value: object) -> object:
    # A number holds no line break, and %d or %.1f needs it as a number.
    return value if isinstance(value, int | float) else _Escaped(value)


class TextFormatter(logging.Formatter):
    """Readable lines. The values a message puts in (a path, a header, an error from
    outside) are escaped, so none can end the line early and forge the next one; the
    text written in the code keeps its lines, as a traceback logged as a message or
    after it does."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if args:
            record = copy.copy(record)
            record.args = (
                {key: _escaped(value) for key, value in args.items()}
                if isinstance(args, Mapping)
                else tuple(_escaped(value) for value in args)
            )
        return super().format(record)


class _AppHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installs, so reconfiguring replaces only it."""


def configure_logging(
    level: str, fmt: Literal["text", "json"], stream: TextIO | None = None
) -> None:
    """Send all records, the server's included, through one handler, writing to
    `stream` (stdout unless given)."""
    handler = _AppHandler(stream or sys.stdout)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AppHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    route_server_logs()


def route_server_logs() -> None:
    """Send the servers' records through the app's handler instead of their own.

    Uvicorn and gunicorn give their loggers handlers of their own (gunicorn's workers
    again as they start), which would bypass the JSON format and the request id.
    """
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # Uvicorn's access log is replaced by the request middleware's: with no handler
    # reachable, uvicorn skips formatting access lines altogether.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
