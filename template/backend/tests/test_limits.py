"""Request limits: the body middleware in-process, the server's protocol over a real
socket. Every refusal is a JSON error with the security headers and a request id."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from fastapi import FastAPI, Request
from httpx import ASGITransport, AsyncClient
from starlette.types import Message

from app.core.config import Settings
from app.core.middleware import BodyLimitMiddleware
from app.core.server import HttpProtocol
from app.main import create_app

LIMITS = Settings(
    ENVIRONMENT="test",
    MAX_BODY_SIZE=4000,
    MAX_REQUEST_LINE=200,
    MAX_HEADERS_SIZE=1024,
    MAX_HEADERS=20,
)
# For the tests that wait for a timeout to pass.
IMPATIENT = LIMITS.model_copy(update={"HEADERS_TIMEOUT": 0.2, "BODY_TIMEOUT": 0.2})


def echo_app(settings: Settings = LIMITS) -> FastAPI:
    """Reads the whole body, as a route with a JSON body does."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> int:
        return len(await request.body())

    app.add_middleware(
        BodyLimitMiddleware,
        max_size=settings.MAX_BODY_SIZE,
        timeout=settings.BODY_TIMEOUT,
    )
    return app


async def post_echo(content: bytes | AsyncIterator[bytes]) -> tuple[int, str]:
    transport = ASGITransport(app=echo_app())
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/echo", content=content)
    return response.status_code, response.text


async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


async def test_body_within_the_limit_is_read_whole() -> None:
    whole = (200, str(LIMITS.MAX_BODY_SIZE))
    assert await post_echo(b"x" * LIMITS.MAX_BODY_SIZE) == whole
    assert await post_echo(chunks(LIMITS.MAX_BODY_SIZE // 10, 10)) == whole


@pytest.mark.parametrize(
    "content",
    [b"x" * (LIMITS.MAX_BODY_SIZE + 1), chunks(LIMITS.MAX_BODY_SIZE // 10, 11)],
    ids=["declared", "chunked"],
)
async def test_larger_body_is_refused_with_413(content: bytes) -> None:
    status, text = await post_echo(content)
    assert status == 413
    assert json.loads(text)["detail"]


async def test_body_that_never_completes_is_refused_with_408() -> None:
    sent: list[Message] = []
    never = asyncio.Event()

    async def receive() -> Message:
        await never.wait()
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "root_path": "",
    }
    await echo_app(IMPATIENT)(scope, receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["detail"]


@asynccontextmanager
async def serving(settings: Settings, app: FastAPI | None = None) -> AsyncIterator[int]:
    """The app (by default the project's) behind uvicorn with the production
    protocol; yields the port."""
    protocol = type("Protocol", (HttpProtocol,), {"settings": settings})
    config = uvicorn.Config(
        create_app(settings) if app is None else app,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    # Listening already: connections wait in the backlog until the server accepts.
    listener.listen()
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(LIMITS) as port:
        yield port


async def exchange(port: int, *parts: bytes) -> bytes:
    """Sends each part in a write of its own; returns all the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def assert_refused(raw: bytes, status: int) -> None:
    code, headers, body = parse(raw)
    assert code == status, raw[:300]
    assert json.loads(body)["detail"]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert len(headers["x-request-id"]) == 32


def get(target: bytes = b"/health", *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n" + b"".join(headers)


async def test_request_within_limits_is_served(port: int) -> None:
    # A body arriving in the same read as the head does not count as head.
    body = b"x" * LIMITS.MAX_BODY_SIZE
    request = get(b"/health", b"Content-Length: %d\r\n" % len(body))
    raw = await exchange(port, request + b"Connection: close\r\n\r\n" + body)
    assert parse(raw)[0] == 200


@pytest.mark.parametrize("ending", [b"", b"\r\n\r\n"], ids=["unfinished", "whole"])
async def test_oversized_headers_are_refused_with_431(port: int, ending: bytes) -> None:
    big = b"X-Big: " + b"a" * LIMITS.MAX_HEADERS_SIZE + ending
    assert_refused(await exchange(port, get(b"/health", big)), 431)


async def test_too_many_headers_are_refused_with_431(port: int) -> None:
    headers = [b"X-%d: a\r\n" % i for i in range(LIMITS.MAX_HEADERS + 1)]
    assert_refused(await exchange(port, get(b"/health", *headers) + b"\r\n"), 431)


async def test_long_request_target_is_refused_with_414(port: int) -> None:
    target = b"/health?q=" + b"a" * LIMITS.MAX_REQUEST_LINE
    assert_refused(await exchange(port, get(target) + b"\r\n"), 414)


async def test_malformed_request_is_refused_with_400(port: int) -> None:
    assert_refused(await exchange(port, b"NOT HTTP AT ALL\r\n\r\n"), 400)


async def test_slow_headers_are_refused_with_408() -> None:
    # The head never ends: the server answers once HEADERS_TIMEOUT has passed.
    async with serving(IMPATIENT) as port:
        assert_refused(await exchange(port, get()), 408)


async def test_request_slower_than_the_headers_timeout_is_answered() -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> str:
        # The head timer, if armed once the request was read, is due before this
        # sleep ends: the event loop runs timers in the order they are due.
        await asyncio.sleep(2 * IMPATIENT.HEADERS_TIMEOUT)
        return "served"

    async with serving(IMPATIENT, app) as port:
        raw = await exchange(port, get(b"/slow", b"Connection: close\r\n\r\n"))
    assert raw, "connection closed without a response"
    status, _, body = parse(raw)
    assert (status, body) == (200, b'"served"')


async def test_idle_connection_is_closed_without_a_response() -> None:
    async with serving(IMPATIENT) as port:
        assert await exchange(port) == b""


async def test_limits_apply_to_each_request_of_a_connection(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(get() + b"\r\n")
        served = await reader.readuntil(b'{"status":"ok"}')
        writer.write(get(b"/health", b"X-Big: " + b"a" * LIMITS.MAX_HEADERS_SIZE))
        async with asyncio.timeout(10):
            refused = await reader.read()
    finally:
        writer.close()
    assert parse(served)[0] == 200
    assert_refused(refused, 431)
