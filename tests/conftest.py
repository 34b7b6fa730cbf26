"""Shared helpers for the template's tests: rendering and the answer space."""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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

# The full product of the answers that change what is rendered the most.
ANSWER_MATRIX = [
    {"python_version": py, "database": db, "production_hardening": hardening}
    for py, db, hardening in itertools.product(PYTHON_VERSIONS, DATABASES, HARDENING)
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


@pytest.fixture(scope="session")
def render(copie_session: Any) -> Renderer:
    """Render the template with the given answers, once per distinct set of answers.

    Renderings are shared by every test of the session: treat them as read-only and
    copy one (``shutil.copytree``) before changing it.
    """
    cache: dict[tuple[tuple[str, Any], ...], Path] = {}

    def _render(**answers: Any) -> Path:
        key = tuple(sorted(answers.items()))
        if key not in cache:
            result = copie_session.copy(extra_answers=answers)
            if result.exception is not None:
                raise result.exception
            cache[key] = result.project_dir
        return cache[key]

    return _render


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
