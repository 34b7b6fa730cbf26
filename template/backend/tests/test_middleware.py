"""Request ids, access log, security headers, trusted hosts and CORS."""

import logging
import re

import pytest
from httpx import ASGITransport, AsyncClient
from starlette.types import Message

from app.core import config
from app.core.config import Settings
from app.core.logging import request_id_var
from app.main import create_app


def client_for(settings: Settings) -> AsyncClient:
    app = create_app(settings)
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://test")


async def test_request_id_is_generated(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_valid_incoming_request_id_is_kept(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "edge-42.a_b"})
    assert response.headers["x-request-id"] == "edge-42.a_b"


async def response_headers(
    settings: Settings, headers: list[tuple[bytes, bytes]]
) -> dict[bytes, bytes]:
    """Calls the app with raw request headers, which an HTTP client would refuse to
    send (a newline, for one), and returns the response's headers."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    await create_app(settings)(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return dict(start["headers"])


@pytest.mark.parametrize(
    "bad",
    ["has space", "x" * 129, "new\nline", "cr\rlf\r\nInjected: 1", "tab\t", "ünï", ""],
)
async def test_unsafe_incoming_request_id_is_replaced(bad: str) -> None:
    headers = await response_headers(Settings(), [(b"x-request-id", bad.encode())])
    assert headers[b"x-request-id"] != bad.encode()
    assert re.fullmatch(rb"[0-9a-f]{32}", headers[b"x-request-id"])


async def test_access_log_line_has_status_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(request_id_var.get())

    spy = Spy()
    logging.getLogger("app.access").addHandler(spy)
    caplog.set_level(logging.INFO, logger="app.access")
    try:
        async with client_for(Settings(ENVIRONMENT="development")) as client:
            response = await client.get("/nowhere", headers={"X-Request-ID": "rid-1"})
    finally:
        logging.getLogger("app.access").removeHandler(spy)
    assert response.status_code == 404
    (record,) = [r for r in caplog.records if r.name == "app.access"]
    assert record.getMessage().startswith("GET /nowhere 404 ")
    assert seen == ["rid-1"]
    assert request_id_var.get() == "-"


async def test_no_access_log_in_production_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    async with client_for(Settings(ENVIRONMENT="production")) as client:
        await client.get("/health")
    assert not [r for r in caplog.records if r.name == "app.access"]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), geolocation=(), microphone=()",
}
HSTS = "max-age=63072000; includeSubDomains"


async def test_security_headers_on_every_response(client: AsyncClient) -> None:
    for path in ("/health", "/nowhere"):
        headers = (await client.get(path)).headers
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name)
        assert "strict-transport-security" not in headers


@pytest.mark.parametrize("hardening", [True, False])
@pytest.mark.parametrize("environment", ["production", "development"])
async def test_hsts_only_in_hardened_production(
    monkeypatch: pytest.MonkeyPatch, hardening: bool, environment: str
) -> None:
    # Whichever answer the project was generated with, both must behave as specified.
    monkeypatch.setattr(config, "PRODUCTION_HARDENING", hardening)
    async with client_for(Settings(ENVIRONMENT=environment)) as client:  # type: ignore[arg-type]
        headers = (await client.get("/health")).headers
    expected = HSTS if hardening and environment == "production" else None
    assert headers.get("strict-transport-security") == expected
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name


# A route of the API (documents included), which the host check guards.
API_ROUTE = "/openapi.json"
# What a probe sends as Host: Docker's healthcheck, then the kubelet (the pod's IP).
PROBE_HOSTS = ["127.0.0.1:8000", "10.1.2.3:8000"]


async def test_untrusted_host_is_refused() -> None:
    settings = Settings(
        ALLOWED_HOSTS=["api.example.com", "*.example.org"], DOCS_ENABLED=True
    )
    async with client_for(settings) as client:
        refused = await client.get(API_ROUTE)
        allowed = await client.get(API_ROUTE, headers={"host": "a.example.org"})
    assert refused.status_code == 400
    assert "x-request-id" in refused.headers
    assert allowed.status_code == 200


@pytest.mark.parametrize("host", PROBE_HOSTS)
async def test_probes_pass_the_host_check_and_the_api_does_not(host: str) -> None:
    settings = Settings(ALLOWED_HOSTS=["api.example.com"], DOCS_ENABLED=True)
    # No lifespan runs, so /ready may fail on its own (no database pool): a probe must
    # get the answer an allowed Host gets, whatever it is.
    transport = ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        probe = {"host": host}
        health = await client.get("/health", headers=probe)
        ready = await client.get("/ready", headers=probe)
        ready_allowed = await client.get("/ready", headers={"host": "api.example.com"})
        api = await client.get(API_ROUTE, headers=probe)
        other_method = await client.post("/health", headers=probe)
    assert health.status_code == 200
    assert ready.status_code != 400
    assert ready.status_code == ready_allowed.status_code
    assert ready.text == ready_allowed.text
    assert api.status_code == 400
    assert other_method.status_code == 400


async def test_cors_allows_only_configured_origins() -> None:
    settings = Settings(CORS_ORIGINS=["https://app.example.com"])
    preflight = {"access-control-request-method": "GET"}
    async with client_for(settings) as client:
        allowed = await client.options(
            "/health", headers={"origin": "https://app.example.com", **preflight}
        )
        refused = await client.options(
            "/health", headers={"origin": "https://evil.example", **preflight}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


async def test_non_http_scopes_pass_through() -> None:
    app = create_app(Settings())
    calls: list[str] = []

    async def receive() -> Message:
        calls.append("receive")
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        calls.append(message["type"])

    await app({"type": "lifespan", "state": {}}, receive, send)
    assert "lifespan.shutdown.complete" in calls
