"""The generated service, installed from its locks and tested natively for every
database: migrations, its own test suite with the coverage gate, ruff and mypy.

PostgreSQL and MariaDB come from admin URLs in TEST_POSTGRES_URL / TEST_MYSQL_URL
(`.ci/databases` prints them); each run creates a database of its own and drops it.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from conftest import DATABASES, run

pytestmark = pytest.mark.slow


def assert_workers_used_the_migrated_schema(migrated: Path) -> None:
    """Each parallel worker's SQLite file is the migrated database, not one that
    `create_all` built: it carries Alembic's revision."""

    def revision(path: Path) -> list[tuple[str]]:
        with closing(sqlite3.connect(path)) as connection:
            return connection.execute("SELECT version_num FROM alembic_version").fetchall()

    workers = sorted(migrated.parent.glob(f"{migrated.stem}-gw*{migrated.suffix}"))
    assert len(workers) == 2, workers
    for path in workers:
        assert revision(path) == revision(migrated), path


@pytest.mark.parametrize("database", DATABASES)
def test_generated_app_passes_its_checks(
    project: Path, database_url: str | None, database: str
) -> None:
    bin_dir = project / ".venv" / "bin"
    env = {"DATABASE_URL": database_url} if database_url else {}
    if database_url:
        # Up, down and up again: the downgrade path works too.
        for step in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
            run(bin_dir / "alembic", *step, cwd=project, env=env)

    result = run(
        *(bin_dir / "pytest", "-n", "2", "-p", "no:cacheprovider", "-W", "error"),
        cwd=project,
        env=env,
    )
    output = result.stdout + result.stderr
    assert "Required test coverage of 90" in output
    summary = re.search(r"(\d+) passed", output)
    assert summary, output[-2000:]
    assert " skipped" not in output.splitlines()[-1], output[-2000:]
    print(f"{database}: {summary.group(0)}; {output.splitlines()[-2].strip()}")

    if database == "sqlite":
        assert_workers_used_the_migrated_schema(Path(database_url.split(":///", 1)[1]))

    run(bin_dir / "ruff", "check", ".", cwd=project)
    run(bin_dir / "ruff", "format", "--check", ".", cwd=project)
    run(bin_dir / "mypy", cwd=project)
