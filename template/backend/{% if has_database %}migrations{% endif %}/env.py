"""Alembic environment: runs migrations over the application's async engine."""

import asyncio
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401  (registers every model on the metadata)
from app.core.config import Settings
from app.core.logging import configure_logging
from app.db.base import Base

config = context.config
settings = Settings()
if context.is_offline_mode():
    # `--sql` writes the script to stdout: the log goes to stderr, as alembic.ini says.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
else:
    # As the service logs (JSON in production), so a release's migration lines reach
    # the same pipeline; on stderr, as alembic.ini had them, since commands such as
    # `alembic current` answer on stdout.
    configure_logging(settings.LOG_LEVEL, settings.log_format, sys.stderr)

target_metadata = Base.metadata


def _url() -> str:
    # An explicit `-x url=...` wins, then DATABASE_URL as the service reads it.
    return (
        context.get_x_argument(as_dictionary=True).get("url") or settings.DATABASE_URL
    )


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    # A one-off process: no pool to keep.
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
