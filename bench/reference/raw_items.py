"""The raw-driver reference of the database route: `GET /api/items` written by hand on
the database's own async driver (asyncpg, aiomysql or aiosqlite, as DATABASE_URL
names it), with no framework, ORM or validation library.

The benchmark mounts it over the image's `app/main.py`, so the image's own server
serves it as it serves the app. It runs the same two queries (a count, then one page)
on a pool of POOL_SIZE connections and answers the same JSON shape; /health answers
the benchmark's start-up probe. Nothing else: it is the floor the app is held to.
"""

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

COLUMNS = "id, name, description, created_at, updated_at"
COUNT = "SELECT count(*) FROM items"
POOL_SIZE = 10
HEADERS = [(b"content-type", b"application/json")]
# The app's default database when DATABASE_URL is not set.
SQLITE_URL = "sqlite+aiosqlite:///./data/app.db"
# The server logs through the root logger, as it does under the app: the benchmark
# waits for its start-up line.
logging.basicConfig(level=logging.INFO, format="%(message)s")

Rows = tuple[int, list[dict[str, Any]]]
Page = Callable[[int, int], Awaitable[Rows]]


async def postgresql(url: str) -> tuple[Page, Callable[[], Awaitable[None]]]:
    import asyncpg

    pool = await asyncpg.create_pool(
        url.replace("+asyncpg", "", 1), min_size=POOL_SIZE, max_size=POOL_SIZE
    )
    page_sql = f"SELECT {COLUMNS} FROM items ORDER BY id LIMIT $1 OFFSET $2"

    async def page(limit: int, offset: int) -> Rows:
        async with pool.acquire() as connection:
            total = await connection.fetchval(COUNT)
            rows = await connection.fetch(page_sql, limit, offset)
        return total, [dict(row) for row in rows]

    return page, pool.close


async def mysql(url: str) -> tuple[Page, Callable[[], Awaitable[None]]]:
    import aiomysql

    parts = urlsplit(url)
    pool = await aiomysql.create_pool(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username,
        password=parts.password,
        db=parts.path.lstrip("/"),
        charset="utf8mb4",
        autocommit=True,
        minsize=POOL_SIZE,
        maxsize=POOL_SIZE,
    )
    page_sql = f"SELECT {COLUMNS} FROM items ORDER BY id LIMIT %s OFFSET %s"

    async def page(limit: int, offset: int) -> Rows:
        async with pool.acquire() as connection, connection.cursor(aiomysql.DictCursor) as cursor:
            await cursor.execute(COUNT)
            (total,) = (await cursor.fetchone()).values()
            await cursor.execute(page_sql, (limit, offset))
            rows = await cursor.fetchall()
        return total, list(rows)

    async def close() -> None:
        pool.close()
        await pool.wait_closed()

    return page, close


async def sqlite(url: str) -> tuple[Page, Callable[[], Awaitable[None]]]:
    import aiosqlite

    path = url.split(":///", 1)[1]
    connections: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    for _ in range(POOL_SIZE):
        connection = await aiosqlite.connect(path)
        connection.row_factory = aiosqlite.Row
        connections.put_nowait(connection)
    page_sql = f"SELECT {COLUMNS} FROM items ORDER BY id LIMIT ? OFFSET ?"

    async def page(limit: int, offset: int) -> Rows:
        connection = await connections.get()
        try:
            async with connection.execute(COUNT) as cursor:
                (total,) = await cursor.fetchone()
            async with connection.execute(page_sql, (limit, offset)) as cursor:
                rows = [dict(row) for row in await cursor.fetchall()]
        finally:
            connections.put_nowait(connection)
        return total, rows

    async def close() -> None:
        while not connections.empty():
            await connections.get_nowait().close()

    return page, close


DRIVERS = {"postgresql": postgresql, "mysql": mysql, "sqlite": sqlite}


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def _respond(send: Callable[..., Awaitable[None]], status: int, body: object) -> None:
    payload = json.dumps(body, default=_default).encode()
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def _database() -> AsyncIterator[Page]:
    url = os.environ.get("DATABASE_URL", SQLITE_URL)
    page, close = await DRIVERS[url.split("+", 1)[0]](url)
    try:
        yield page
    finally:
        await close()


async def _lifespan(receive: Callable[..., Awaitable[dict[str, Any]]], send: Any) -> None:
    assert (await receive())["type"] == "lifespan.startup"
    async with _database() as page:
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
