"""The bare-server reference of the database route: `GET /api/items` written by hand
on the database's own async driver (raw_drivers.py) as a bare ASGI app, with no
framework, ORM, middleware or validation library.

The benchmark mounts it over the image's `app/main.py`, so the image's own server
serves it as it serves the app. It runs the same two queries and answers the same
JSON shape; /health answers the benchmark's start-up probe. Nothing else: it is the
floor of what the image's server can do, not a target for a framework's route.
"""

import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from raw_drivers import Page, pages

HEADERS = [(b"content-type", b"application/json")]
# The app's default database when DATABASE_URL is not set.
SQLITE_URL = "sqlite+aiosqlite:///./data/app.db"
# The server logs through the root logger, as it does under the app: the benchmark
# waits for its start-up line.
logging.basicConfig(level=logging.INFO, format="%(message)s")


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def _respond(send: Callable[..., Awaitable[None]], status: int, body: object) -> None:
    payload = json.dumps(body, default=_default).encode()
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Callable[..., Awaitable[dict[str, Any]]], send: Any) -> None:
    assert (await receive())["type"] == "lifespan.startup"
    async with pages(os.environ.get("DATABASE_URL", SQLITE_URL)) as page:
        _pages.append(page)
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
    await send({"type": "lifespan.shutdown.complete"})


_pages: list[Page] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["path"] == "/api/items":
        query = parse_qs(scope["query_string"].decode())
        limit = int(query.get("limit", ["20"])[0])
        offset = int(query.get("offset", ["0"])[0])
        total, items = await _pages[0](limit, offset)
        body = {"items": items, "total": total, "limit": limit, "offset": offset}
        await _respond(send, 200, body)
    elif scope["path"] == "/health":
        await _respond(send, 200, {"status": "ok"})
    else:
        await _respond(send, 404, {"detail": "Not Found"})
