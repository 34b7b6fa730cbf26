"""The generated service, installed from its locks and tested natively for every
database: migrations, its own test suite with the coverage gate, ruff and mypy.

PostgreSQL and MariaDB come from admin URLs in TEST_POSTGRES_URL / TEST_MYSQL_URL
(`.ci/databases` prints them); each run creates a database of its own and drops it.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import Renderer, run

pytestmark = pytest.mark.slow

# Rendered for an interpreter this machine has; the locks cover 3.11 and newer.
PYTHON = "3.13"
ADMIN_URL_VARIABLE = {"postgresql": "TEST_POSTGRES_URL", "mysql": "TEST_MYSQL_URL"}
ASYNC_SCHEME = {"postgresql": "postgresql+asyncpg", "mysql": "mysql+aiomysql"}
# Runs inside the generated venv, whose driver does the admin work.
ADMIN_SQL = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

async def main(url, statement):
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def find_python(version: str) -> str | None:
    """An interpreter of `version` that actually starts (pyenv shims may not)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [str(p) for p in sorted(root.glob(f"versions/{version}*/bin/python{version}"))]
    candidates.append(shutil.which(f"python{version}") or "")
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


def uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv") or "uv"


def admin_url(database: str) -> str:
    variable = ADMIN_URL_VARIABLE[database]
    url = os.environ.get(variable)
    if not url:
        message = f"{variable} is not set (run .ci/databases for a local server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


def async_url(url: str, database: str, name: str) -> str:
    """The admin URL with the async driver and another database name."""
    parts = urlsplit(url)
    query = "charset=utf8mb4" if database == "mysql" else ""
    return urlunsplit((ASYNC_SCHEME[database], parts.netloc, f"/{name}", query, ""))


@pytest.fixture
def project(render: Renderer, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    database = request.node.callspec.params["database"]
    rendered = render(database=database, python_version=PYTHON)
    backend = tmp_path / "backend"
    shutil.copytree(rendered / "backend", backend)
    python = find_python(PYTHON)
    if python is None:
        message = f"no Python {PYTHON} interpreter on this machine"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    venv = {"VIRTUAL_ENV": str(backend / ".venv")}
    run(uv(), "venv", "--quiet", "--python", python, ".venv", cwd=backend)
    run(
        *(uv(), "pip", "sync", "--quiet", "--require-hashes", "requirements-dev.txt"),
        cwd=backend,
        env=venv,
    )
    return backend


@pytest.fixture
def database_url(
    project: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str | None]:
    database = request.node.callspec.params["database"]
    if database == "none":
        yield None
        return
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    admin = async_url(admin_url(database), database, urlsplit(admin_url(database)).path[1:])
    name = f"gen_{uuid.uuid4().hex[:12]}"
    python = str(project / ".venv" / "bin" / "python")
    run(python, "-c", ADMIN_SQL, admin, f"CREATE DATABASE {name}", cwd=project)
    try:
        yield async_url(admin_url(database), database, name)
    finally:
        run(python, "-c", ADMIN_SQL, admin, f"DROP DATABASE {name}", cwd=project)


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


@pytest.mark.parametrize("database", ["postgresql", "mysql", "sqlite", "none"])
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
