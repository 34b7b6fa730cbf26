"""Error responses from every layer: JSON with a `detail`, the security headers and
the request id; unexpected errors logged in full and never shown."""

import json
import math
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient, Response

from app.core.config import Settings
from app.core.errors import EXCERPT_LENGTH, excerpt
from app.main import create_app

SECRET = "password=hunter2 in an internal message"


def client_for(app: FastAPI) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://test")


def assert_json_error(response: Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


def failing_app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError(SECRET)

    @app.get("/fails-while-streaming")
    async def fails_while_streaming() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            raise RuntimeError(SECRET)

        return StreamingResponse(chunks())

    return app


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.usefixtures("restore_logging")
async def test_unexpected_error_is_logged_not_shown(
    environment: Literal["development", "production"],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(ENVIRONMENT=environment)
    async with client_for(failing_app(settings)) as client:
        response = await client.get("/fails", headers={"X-Request-ID": "rid-500"})
    assert_json_error(response, 500)
    assert SECRET not in response.text
    logged = capsys.readouterr().out
    if settings.log_format == "json":
        (entry,) = [
            json.loads(line) for line in logged.splitlines() if "rid-500" in line
        ]
        logged = entry["exception"] + entry["request_id"]
    assert "Traceback" in logged
    assert SECRET in logged
    assert "rid-500" in logged


async def test_error_after_the_response_started_still_propagates() -> None:
    app = failing_app(Settings(ENVIRONMENT="test"))
    async with client_for(app) as client:
        with pytest.raises(RuntimeError, match="hunter2"):
            await client.get("/fails-while-streaming")


async def test_method_not_allowed_lists_every_method_of_the_path(
    client: AsyncClient, app: FastAPI
) -> None:
    for path, operations in app.openapi()["paths"].items():
        allowed = {method.upper() for method in operations}
        method = "PUT" if "PUT" not in allowed else "TRACE"
        response = await client.request(method, path.replace("{item_id}", "1"))
        assert_json_error(response, 405)
        assert set(response.headers["allow"].split(", ")) == allowed, path


async def test_host_check_covers_cors_preflights() -> None:
    settings = Settings(
        ALLOWED_HOSTS=["api.example.com"], CORS_ORIGINS=["https://app.example.com"]
    )
    preflight = {
        "origin": "https://app.example.com",
        "access-control-request-method": "GET",
        "host": "evil.example",
    }
    async with client_for(create_app(settings)) as client:
        response = await client.options("/health", headers=preflight)
    assert_json_error(response, 400)
    assert "access-control-allow-origin" not in response.headers


async def test_cors_refusal_is_a_json_error() -> None:
    settings = Settings(CORS_ORIGINS=["https://app.example.com"])
    preflight = {
        "origin": "https://evil.example",
        "access-control-request-method": "GET",
    }
    async with client_for(create_app(settings)) as client:
        response = await client.options("/health", headers=preflight)
    assert_json_error(response, 400)


async def test_unknown_path_is_a_json_error(client: AsyncClient) -> None:
    assert_json_error(await client.get("/nowhere"), 404)


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        -math.inf,
        10**5000,
        "\ud800 lone surrogate",
        "x" * 100_000,
        b"\xff\xfe raw bytes",
        [[[[list(range(10_000))]]]],
        {f"key{i}": "v" * 1000 for i in range(1000)},
        ValueError("x" * 10_000),
    ],
    ids=lambda value: type(value).__name__,
)
def test_excerpt_is_short_and_always_encodes(value: object) -> None:
    encoded = json.dumps(excerpt(value), allow_nan=False).encode("utf-8")
    assert len(encoded) <= 2 * EXCERPT_LENGTH


@pytest.mark.parametrize("value", [None, True, 42, 1.5, "short"])
def test_excerpt_keeps_small_values(value: object) -> None:
    assert excerpt(value) == value
