"""Wait until the database holds this release's schema, then run the given command.

Orchestrators start the migrations and the new server tasks side by side (Swarm's
migrate job, a Kubernetes Job); run as
`python -m app.db.wait_for_migrations gunicorn app.main:app`, the server starts only
once the migrations it needs are applied, so it passes no health check and takes no
traffic before.
"""

import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import Settings
from app.core.logging import configure_logging

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
POLL_SECONDS = 1.0

# Named for the module also when run as `python -m`, where `__name__` is `__main__`.
logger = logging.getLogger("app.db.wait_for_migrations")


def is_migrated(script: ScriptDirectory, current: set[str]) -> bool:
    """Whether the database revisions `current` include every head of `script`."""
    applied: set[str] = set()
    for revision in current:
        try:
            ancestors = script.iterate_revisions(revision, "base")
            applied.update(ancestor.revision for ancestor in ancestors)
        except ResolutionError:
            # A revision this code does not know comes from a newer release (a rollback
            # onto a migrated database): its schema is a superset of this one's.
            return True
    return set(script.get_heads()) <= applied


def _current_heads(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_heads)
    finally:
        await engine.dispose()


async def wait(url: str, script: ScriptDirectory) -> None:
    # Logged when the reason to wait changes, not at every poll.
    reported: tuple[str, str] | None = None
    while True:
        try:
            if is_migrated(script, await current_revisions(url)):
                return
            reason = ("waiting for migrations %s", ", ".join(script.get_heads()))
        except (OSError, SQLAlchemyError) as error:
            reason = ("waiting for the database: %s", str(error))
        if reason != reported:
            logger.info(*reason)
            reported = reason
        await asyncio.sleep(POLL_SECONDS)


def main(command: list[str]) -> None:
    settings = Settings()
    # As the service logs (JSON in production), so these lines reach the same pipeline.
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    script = ScriptDirectory.from_config(Config(ALEMBIC_INI))
    asyncio.run(wait(settings.DATABASE_URL, script))
    logger.info(
        "the database holds this release's schema: starting %s", shlex.join(command)
    )
    # The command replaces this process, so the server gets the signals directly.
    os.execvp(command[0], command)  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
