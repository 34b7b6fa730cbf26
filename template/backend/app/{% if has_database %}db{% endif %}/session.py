"""Engine and per-request sessions."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.config import Settings
from app.db.instrumentation import observe_pool, trace_queries


def create_engine(settings: Settings) -> AsyncEngine:
    # Pre-ping replaces connections that died with a database restart, instead of
    # failing the next request on each of them.
    engine = create_async_engine(settings.DATABASE_URL, pool_pre_ping=True)
    if settings.METRICS_ENABLED:
        observe_pool(engine)
    if settings.TELEMETRY_ENABLED:
        trace_queries(engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Objects stay readable after commit without another round trip.
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed (and rolled back if uncommitted) at its end."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
