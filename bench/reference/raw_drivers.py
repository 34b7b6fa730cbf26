"""The two queries of `GET /api/items` written by hand on the database's own async
driver (asyncpg, aiomysql or aiosqlite, as the SQLAlchemy URL names it), on a pool
of POOL_SIZE connections: a count, then one page of rows as dicts.

Both references of the database route share it: the bare ASGI app (raw_items.py)
and the route written by hand inside the generated app (raw_in_app.py).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

COLUMNS = "id, name, description, created_at, updated_at"
COUNT = "SELECT count(*) FROM items"
POOL_SIZE = 10

Rows = tuple[int, list[dict[str, Any]]]
Page = Callable[[int, int], Awaitable[Rows]]
Close = Callable[[], Awaitable[None]]


async def postgresql(url: str) -> tuple[Page, Close]:
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


async def mysql(url: str) -> tuple[Page, Close]:
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


async def sqlite(url: str) -> tuple[Page, Close]:
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


@asynccontextmanager
async def pages(url: str) -> AsyncIterator[Page]:
    """The page function of the driver `url` names, its pool open until exit."""
    page, close = await DRIVERS[url.split("+", 1)[0]](url)
    try:
        yield page
    finally:
        await close()
