"""Shared helpers for the template's tests: rendering and the answer space."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

# The Docker fixtures (images, container, stack) live beside the helpers they use.
pytest_plugins = ["docker_support"]

REPO = Path(__file__).resolve().parent.parent
COPIER_YML = yaml.safe_load((REPO / "copier.yml").read_text())
QUESTIONS = {name: spec for name, spec in COPIER_YML.items() if not name.startswith("_")}
ASKED = [name for name, spec in QUESTIONS.items() if spec.get("when") is not False]
COMPUTED = [name for name, spec in QUESTIONS.items() if spec.get("when") is False]


def choices(question: str) -> list[Any]:
    """The allowed values of a multiple-choice question, as copier.yml lists them."""
    declared = COPIER_YML[question]["choices"]
    return list(declared.values() if isinstance(declared, dict) else declared)


def default(question: str) -> Any:
    return COPIER_YML[question]["default"]


PYTHON_VERSIONS = choices("python_version")
DATABASES = choices("database")
HARDENING = [True, False]
DEFAULT_PYTHON = default("python_version")

TASK_QUEUES = choices("task_queue")
DEFAULT_TASK_QUEUE = default("task_queue")

# Compose services that run once to completion; every other one serves for good.
ONE_OFF_SERVICES = {"migrate"}

# The full product of the answers that change what is rendered the most; each other
# task queue with every database and hardening, at the default Python only: its files
# do not depend on the Python version, so five of each would double the renderings
# and prove nothing more.
ANSWER_MATRIX = [
    {"python_version": py, "database": db, "production_hardening": hardening}
    for py, db, hardening in itertools.product(PYTHON_VERSIONS, DATABASES, HARDENING)
] + [
    {
        "python_version": DEFAULT_PYTHON,
        "database": db,
        "production_hardening": hardening,
        "task_queue": queue,
    }
    for queue, db, hardening in itertools.product(TASK_QUEUES, DATABASES, HARDENING)
    if queue != DEFAULT_TASK_QUEUE
]


def matrix_id(answers: Mapping[str, Any]) -> str:
    return "-".join(
        f"{key}={value}" if key == "production_hardening" else str(value)
        for key, value in answers.items()
    )


Renderer = Callable[..., Path]


def run(
    *args: str | Path,
    check: bool = True,
    timeout: float = 900,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run a command with `env` added to this process's environment; with `check`, a
    failure fails the test and shows the end of the command's output."""
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        **kwargs,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def session_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory common to every process of this test session (pytest-xdist's workers
    share the parent of their base directories), and to this session only."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(path)` in the first process that asks for it; the others
    wait for that build instead of repeating it. A failed build leaves nothing behind."""
    with Path(f"{path}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        complete = Path(f"{path}.complete")
        if not complete.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a killed build left
            try:
                build(path)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            complete.touch()
    return path


# Answers that a rendering gets anyway when it does not give them: a rendering keyed
# with them is the same as one without (templated defaults, like the slug's, vary).
PLAIN_DEFAULTS = {
    name: QUESTIONS[name]["default"]
    for name in ASKED
    if "{{" not in str(QUESTIONS[name]["default"])
}


# What Copier reads of this repository: its settings, the rendered tree and what it includes.
TEMPLATE_PARTS = {"copier.yml", "includes", "template", "locks"}


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template as it is in this checkout, outside git: Copier renders it directly
    instead of cloning it for every copy."""

    def copy(destination: Path) -> None:
        destination.mkdir()
        for part in TEMPLATE_PARTS:
            source = REPO / part
            if source.is_dir():
                shutil.copytree(source, destination / part)
            else:
                shutil.copy2(source, destination / part)

    return build_once(session_shared_dir(tmp_path_factory) / "template", copy)


@pytest.fixture(scope="session")
def render(
    template: Path, copie_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Renderer:
    """Render the template with the given answers, once per distinct set of answers for
    the whole session, whichever test process asks first.

    Renderings are shared by every test of the session: treat them as read-only and
    copy one (``shutil.copytree``) before changing it.
    """
    renderings = session_shared_dir(tmp_path_factory) / "renderings"
    renderings.mkdir(exist_ok=True)

    def _render(**answers: Any) -> Path:
        complete = {**PLAIN_DEFAULTS, **answers}
        key = hashlib.sha256(json.dumps(complete, sort_keys=True).encode()).hexdigest()[:16]

        def copy(destination: Path) -> None:
            result = copie_session.copy(extra_answers=answers, template_dir=template)
            if result.exception is not None:
                raise result.exception
            result.project_dir.rename(destination)

        return build_once(renderings / key, copy)

    return _render


# The generated service installed natively from its locks (slow tests); PostgreSQL and
# MariaDB come from admin URLs in TEST_POSTGRES_URL / TEST_MYSQL_URL (`.ci/databases`
# prints them), and each test gets a database of its own, dropped at its end.
# Rendered for an interpreter this machine has; the locks cover 3.11 and newer.
NATIVE_PYTHON = "3.13"
ADMIN_URL_VARIABLE = {
    "postgresql": "TEST_POSTGRES_URL",
    "mysql": "TEST_MYSQL_URL",
    "redis": "TEST_REDIS_URL",
}
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
    task_queue = request.node.callspec.params.get("task_queue", DEFAULT_TASK_QUEUE)
    rendered = render(database=database, task_queue=task_queue, python_version=NATIVE_PYTHON)
    backend = tmp_path / "backend"
    shutil.copytree(rendered / "backend", backend)
    python = find_python(NATIVE_PYTHON)
    if python is None:
        message = f"no Python {NATIVE_PYTHON} interpreter on this machine"
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


def pytest_configure(config: pytest.Config) -> None:
    # A test of the template must never pick up the developer's Copier settings.
    settings = Path(tempfile.mkdtemp(prefix="copier-settings-")) / "settings.yml"
    settings.write_text("{}\n")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: CI must run every test, Docker ones included."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped:
        reporter.ensure_newline()
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run:")
        for report in skipped:
            reporter.write_line(f"  {report.nodeid}: {skip_reason(report)}")
        if exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def skip_reason(report: pytest.TestReport) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
