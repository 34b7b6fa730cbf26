"""The HTTP protocol the server runs: uvicorn's httptools parser with request limits.

uvicorn's parser accepts a request line and headers of any size, and waits for them
forever; gunicorn's `limit_request_*` settings apply to its own parser only, not to
uvicorn workers. This protocol counts the bytes of each request head as they arrive
and refuses it, before any of it reaches the app, when it is too large (431), its
target too long (414), it has too many headers (431) or it is too slow (408). The
refusals, and uvicorn's own for malformed requests (400), are JSON errors with the
security headers and a request id, like every response of the app.

Used by gunicorn's workers (gunicorn.conf.py) and by `uvicorn --http` in development.
"""

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.config import Settings, get_settings
from app.core.logging import request_id_var
from app.core.middleware import new_request_id, security_headers

logger = logging.getLogger("app.server")


class _Refused(Exception):
    """Stops the parser; uvicorn then calls `send_400_response`, which answers it."""


class HttpProtocol(HttpToolsProtocol):
    settings: ClassVar[Settings | None] = None
    """Tests bind their own settings to a subclass; unset, the process's are used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = self.settings or get_settings()
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal = (HTTPStatus.BAD_REQUEST, "malformed request")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A head still incomplete after more bytes than the limit is refused at once,
        # so the parser never holds more than the limit and a read or two of it: the
        # start of a head in the read that ended the previous request is not counted.
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head:
            if self._head_bytes > self.limits.MAX_HEADERS_SIZE:
                self._refuse(*self._large_head)
            elif self._head_bytes:
                # Only a head begun and unfinished is timed. A read that completed a
                # request leaves none: the app is serving it, however long it takes,
                # and once it has answered uvicorn's keep-alive timeout bounds the wait.
                self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.MAX_REQUEST_LINE:
            self._stop_parser(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                f"request target longer than {self.limits.MAX_REQUEST_LINE} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > self.limits.MAX_HEADERS:
            self._stop_parser(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"more than {self.limits.MAX_HEADERS} request headers",
            )

    def on_headers_complete(self) -> None:
        # A read can hold a whole head and the start of the body: the head's size is
        # what the parser found, each header line with its ": " and CRLF.
        lines = (len(name) + len(value) + 4 for name, value in self.headers)
        size = len(self.url) + sum(lines)
        if size > self.limits.MAX_HEADERS_SIZE:
            self._stop_parser(*self._large_head)
        self._reading_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What arrives next is the head of the next request on this connection.
        self._reading_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        status, detail = self._refusal
        self._refuse(status, detail)

    @property
    def _large_head(self) -> tuple[HTTPStatus, str]:
        limit = self.limits.MAX_HEADERS_SIZE
        detail = f"request headers larger than {limit} bytes"
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, detail

    def _stop_parser(self, status: HTTPStatus, detail: str) -> None:
        self._refusal = (status, detail)
        raise _Refused(detail)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.HEADERS_TIMEOUT, self._head_timed_out
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes == 0:
            # Idle: closed quietly, as uvicorn's keep-alive timeout does.
            self.transport.close()
            return
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"request headers not received within {self.limits.HEADERS_TIMEOUT:g} s",
        )

    def _refuse(self, status: HTTPStatus, detail: str) -> None:
        """Answers with a JSON error and closes the connection, reading no more."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        request_id = new_request_id()
        token = request_id_var.set(request_id)
        logger.warning("refused a request: %d %s", status, detail)
        request_id_var.reset(token)
        body = json.dumps({"detail": detail}).encode()
        headers = [
            *security_headers(hsts=self.limits.hsts_enabled),
            (b"x-request-id", request_id.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
