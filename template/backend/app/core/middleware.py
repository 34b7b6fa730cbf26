"""Pure ASGI middleware: cheaper than BaseHTTPMiddleware, which wraps every response
in an extra task and stream."""

import asyncio
import logging
import re
import time
from collections.abc import Collection, Sequence
from uuid import uuid4

from fastapi import HTTPException, status
from opentelemetry import trace
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import request_id_var

access_logger = logging.getLogger("app.access")

# A client-supplied id is reused only when it cannot forge or break a log line.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            return None
    return None


class RequestContextMiddleware:
    """Gives each request an id (X-Request-ID in and out) and optionally logs it."""

    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        token = request_id_var.set(request_id)
        # On the request's span too, so a log line leads to its trace (no-op untraced).
        trace.get_current_span().set_attribute("request.id", request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access_logger.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            request_id_var.reset(token)


def security_headers(*, hsts: bool) -> list[tuple[bytes, bytes]]:
    """Browser-facing protections, for the app's responses and the server's own."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), geolocation=(), microphone=()"),
    ]
    if hsts:
        # Browsers honour it only over HTTPS, as served by the proxy in front.
        headers.append(
            (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
        )
    return headers


def new_request_id() -> str:
    return uuid4().hex


class SecurityHeadersMiddleware:
    """Adds browser-facing protections to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = security_headers(hsts=hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *self.headers]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheckMiddleware:
    """Refuses a Host header outside `allowed_hosts` (400), except on a probe's GET of
    `probe_paths`: Docker's healthcheck and the kubelet name the container by
    its address (127.0.0.1, the pod's IP), which no ALLOWED_HOSTS lists, and a failed
    probe restarts or rolls back a healthy server."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        probe_paths: Collection[str],
    ) -> None:
        self.app = app
        self.checked = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts)
        self.probe_paths = frozenset(probe_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        probe = (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] in self.probe_paths
        )
        await (self.app if probe else self.checked)(scope, receive, send)


# A refused body is left unread: the connection is closed rather than kept for more.
_CLOSE = {"Connection": "close"}


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Refuses a body larger than `max_size` (413) or slower than `timeout` (408).

    A declared Content-Length is checked before anything is read; a chunked body is
    counted as it streams, so at most `max_size` bytes (and one chunk) are ever held.
    """

    def __init__(self, app: ASGIApp, *, max_size: int, timeout: float) -> None:
        self.app = app
        self.max_size = max_size
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_size:
            response = JSONResponse(
                {"detail": self._too_large},
                status.HTTP_413_CONTENT_TOO_LARGE,
                headers=_CLOSE,
            )
            await response(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT,
                    f"request body not received within {self.timeout:g} s",
                    headers=_CLOSE,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_size:
                    # Raised where the body is read, so the app's handler answers it.
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        self._too_large,
                        headers=_CLOSE,
                    )
            else:
                complete = True
            return message

        await self.app(scope, limited_receive, send)

    @property
    def _too_large(self) -> str:
        return f"request body larger than {self.max_size} bytes"
