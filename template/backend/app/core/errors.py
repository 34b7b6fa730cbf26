"""Error responses: every one is JSON with a `detail`, whatever produced it.

The app's handlers cover validation and HTTP errors; the middleware covers what the
framework's own middleware answers in plain text and any unexpected exception, so
that these responses too pass through the request-id and security-header middleware.
"""

import logging
import math
import reprlib
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app.errors")

# A validation error says what was wrong, not what was sent: each echoed value is cut
# to a short excerpt, and a body with thousands of mistakes gets the first few.
MAX_ERRORS = 20
EXCERPT_LENGTH = 80
_excerpt_repr = reprlib.Repr()  # its keyword arguments need Python 3.12
_excerpt_repr.maxlevel = 2
for _limit in ("maxdict", "maxlist", "maxtuple", "maxset"):
    setattr(_excerpt_repr, _limit, 4)
for _limit in ("maxstring", "maxother", "maxlong"):
    setattr(_excerpt_repr, _limit, EXCERPT_LENGTH)


def _excerpt_text(text: str) -> str:
    if len(text) > EXCERPT_LENGTH:
        text = text[:EXCERPT_LENGTH] + "…"
    # Lone surrogates cannot be encoded as UTF-8: written as escapes instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(value: Any) -> Any:
    """`value` if it is a small JSON scalar, else a short text that always encodes."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, int):
        # Python refuses to write out an integer of more than 4300 digits.
        return value if abs(value) < 10**15 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, str):
        return _excerpt_text(value)
    return _excerpt_text(_excerpt_repr.repr(value))


def _safe_error(error: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {
        "type": error["type"],
        "loc": [excerpt(part) for part in error["loc"]],
        "msg": _excerpt_text(str(error["msg"])),
        "input": excerpt(error.get("input")),
    }
    if "ctx" in error:
        safe["ctx"] = {
            key: _excerpt_text(str(value))
            if isinstance(value, BaseException)
            else excerpt(value)
            for key, value in error["ctx"].items()
        }
    return safe


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 (registered for it)
    errors = exc.errors()
    return JSONResponse(
        {"detail": [_safe_error(error) for error in errors[:MAX_ERRORS]]},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, not only the first route's."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 (registered for it)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        allow = ", ".join(_allowed_methods(request))
        exc = HTTPException(exc.status_code, exc.detail, {"Allow": allow})
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)


def _is_plain_text(message: Message) -> bool:
    return any(
        name == b"content-type" and value.startswith(b"text/plain")
        for name, value in message.get("headers", ())
    )


class ErrorResponsesMiddleware:
    """Answers an unexpected exception with a 500 JSON error, logging its traceback
    (the request id is on the line) without showing it; rewrites the plain-text
    refusals of the host and CORS checks as JSON errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        refusal: Message | None = None
        text = b""

        async def send_json_errors(message: Message) -> None:
            nonlocal started, refusal, text
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400 and _is_plain_text(message):
                    refusal = message
                    return
            elif refusal is not None:
                text += message.get("body", b"")
                if message.get("more_body", False):
                    return
                await _send_error(
                    scope,
                    receive,
                    send,
                    refusal["status"],
                    text.decode("utf-8", "replace"),
                    _kept_headers(refusal),
                )
                return
            await send(message)

        try:
            await self.app(scope, receive, send_json_errors)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            await _send_error(
                scope,
                receive,
                send,
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                "internal error",
            )


async def _send_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status_code: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    response = JSONResponse({"detail": detail}, status_code, headers=headers)
    await response(scope, receive, send)


def _kept_headers(start: Message) -> dict[str, str]:
    """A refusal's own headers (CORS ones among them), minus those of its text body."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in start.get("headers", ())
        if name not in (b"content-type", b"content-length")
    }
