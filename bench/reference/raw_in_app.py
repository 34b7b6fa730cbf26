"""The in-app reference of the database route: the generated app, built by its own
`create_app()` (middleware, settings, error handlers, server), with `GET /api/items`
answered by a handler written by hand on the database's own async driver
(raw_drivers.py) in place of the app's SQLAlchemy route.

The handler takes the same query parameters, validated by FastAPI as the app's are,
and returns the app's own `ItemPage`; its pool of connections opens and closes with
the app's lifespan. The benchmark mounts this module next to the app package and
serves `raw_in_app:app` with the image's server and its settings.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from app.api.routes.items import MAX_INT
from app.main import create_app
from app.schemas.item import ItemPage
from fastapi import FastAPI, Query, Request
from raw_drivers import pages

app = create_app()
app_lifespan = app.router.lifespan_context


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with app_lifespan(app), pages(app.state.settings.DATABASE_URL) as page:
        app.state.raw_page = page
        yield


app.router.lifespan_context = lifespan


@app.get("/api/items")
async def list_items(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> ItemPage:
    total, items = await request.app.state.raw_page(limit, offset)
    return ItemPage.model_validate(
        {"items": items, "total": total, "limit": limit, "offset": offset}
    )


# Routes match in order: first, it answers where the app's own route would.
app.router.routes.insert(0, app.router.routes.pop())
