"""Every rendering of the answer space is clean, valid and holds only what its answers need."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import ANSWER_MATRIX, COMPUTED, ONE_OFF_SERVICES, default, matrix_id

pytestmark = pytest.mark.parametrize("answers", ANSWER_MATRIX, ids=matrix_id)

BIN = Path(sys.executable).parent
# GitHub Actions expressions (`${{ ... }}`), Grafana's legends (`"{{label}}"`, or several
# labels with spaces between) and the Go templates of docker's `--format '{{.Field}}'` are
# the only `{{` a rendering may hold; a lone `}}` is ordinary Python (nested dicts), so
# only openers and statement tags count.
NOT_JINJA = re.compile(
    r"\$\{\{.*?\}\}|\"legendFormat\": \"\{\{\w+\}\}( \{\{\w+\}\})*\"|--format '\{\{\.[\w.]+\}\}'"
)
JINJA_LEFTOVER = re.compile(r"\{\{|\{%|%\}")
COMPOSE_FILES = [
    "docker-compose.yml",
    "docker-compose.override.yml",
    "docker-compose.production.yml",
]
# Files that exist only for a database; `database=none` renders none of them.
DATABASE_ONLY = [
    "backend/alembic.ini",
    "backend/migrations",
    "backend/app/db",
    "backend/app/models",
    "backend/app/api/routes/items.py",
]
DRIVER_PACKAGE = {"postgresql": "asyncpg", "mysql": "aiomysql", "sqlite": "aiosqlite"}


def text_files(project: Path) -> list[Path]:
    return [path for path in sorted(project.rglob("*")) if path.is_file()]


@cache
def schema(name: str) -> dict[str, Any]:
    vendored = files("check_jsonschema.builtin_schemas.vendor") / f"{name}.json"
    return json.loads(vendored.read_text())


def assert_valid(document: Any, schema_name: str, path: Path) -> None:
    errors = list(jsonschema.Draft7Validator(schema(schema_name)).iter_errors(document))
    assert not errors, f"{path}: " + "; ".join(error.message for error in errors)


def test_rendering_is_clean_text(render, answers):
    project = render(**answers)
    for path in text_files(project):
        text = path.read_text()
        leftovers = JINJA_LEFTOVER.findall(NOT_JINJA.sub("", text))
        assert not leftovers, f"{path}: Jinja left over: {leftovers}"
        assert text.endswith("\n"), f"{path}: no newline at the end"
        assert not text.endswith("\n\n"), f"{path}: blank lines at the end"
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            assert line == line.rstrip(), f"{path}:{number}: trailing whitespace"
        blank_runs = re.findall(r"\n\n\n+", text)
        # Python, and Alembic's template of Python revisions, keep PEP 8's two blank lines.
        if path.suffix not in {".py", ".mako"}:
            assert not blank_runs, f"{path}: more than one blank line in a row"


def test_python_is_formatted_and_lint_free(render, answers):
    backend = render(**answers) / "backend"
    for command in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = subprocess.run(
            [BIN / "ruff", *command, "."],
            cwd=backend,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_yaml_parses_and_compose_and_workflows_match_their_schemas(render, answers):
    project = render(**answers)
    yaml_files = [p for p in text_files(project) if p.suffix in {".yml", ".yaml"}]
    assert yaml_files
    documents = {path: yaml.safe_load(path.read_text()) for path in yaml_files}
    for name in COMPOSE_FILES:
        assert_valid(documents[project / name], "compose-spec", project / name)
    for path in (project / ".github" / "workflows").glob("*.yml"):
        assert_valid(documents[path], "github-workflows", path)
    dependabot = project / ".github" / "dependabot.yml"
    assert_valid(documents[dependabot], "dependabot", dependabot)


def test_dockerfiles_pass_hadolint(render, answers):
    backend = render(**answers) / "backend"
    dockerfiles = sorted(backend.glob("Dockerfile*"))
    assert [path.name for path in dockerfiles] == ["Dockerfile", "Dockerfile.production"]
    result = subprocess.run([BIN / "hadolint", *dockerfiles], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_answers_file_records_the_answers(render, answers):
    recorded = yaml.safe_load((render(**answers) / ".copier-answers.yml").read_text())
    for question, value in answers.items():
        assert recorded[question] == value
    assert recorded["workers"] == default("workers")
    assert "_src_path" in recorded
    assert COMPUTED
    assert not set(COMPUTED) & set(recorded)


def test_only_the_chosen_database_is_rendered(render, answers):
    project = render(**answers)
    database = answers["database"]
    for relative in DATABASE_ONLY:
        assert (project / relative).exists() == (database != "none"), relative
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    services = set(compose["services"])
    assert ("db" in services) == (database in {"postgresql", "mysql"})
    assert ("migrate" in services) == (database != "none")
    requirements = (project / "backend" / "requirements.txt").read_text().lower()
    for other, package in DRIVER_PACKAGE.items():
        assert (f"\n{package}==" in requirements) == (other == database), package
    assert ("sqlalchemy" in requirements) == (database != "none")


def test_python_version_reaches_the_images_and_the_project(render, answers):
    project = render(**answers)
    version = answers["python_version"]
    for dockerfile in ("Dockerfile", "Dockerfile.production"):
        text = (project / "backend" / dockerfile).read_text()
        assert f"ARG PYTHON_VERSION={version}\n" in text
    pyproject = (project / "backend" / "pyproject.toml").read_text()
    assert f'requires-python = ">={version}"' in pyproject


def test_every_dependency_install_checks_hashes(render, answers):
    for name in ("Dockerfile", "Dockerfile.production"):
        dockerfile = (render(**answers) / "backend" / name).read_text().replace("\\\n", " ")
        installs = re.findall(r"\buv pip install\b[^&\n]*", dockerfile)
        assert installs, name
        for install in installs:
            assert "--require-hashes" in install, f"{name}: {install}"


def test_every_image_target_runs_as_uid_10001(render, answers):
    for name in ("Dockerfile", "Dockerfile.production"):
        stages = re.split(r"^FROM ", (render(**answers) / "backend" / name).read_text(), flags=re.M)
        runnable = [
            stage for stage in stages if re.match(r"\S+ AS (production|development)\b", stage)
        ]
        assert runnable, name
        for stage in runnable:
            users = re.findall(r"^USER (.+)$", stage, flags=re.M)
            assert users[-1:] == ["10001:10001"], f"{name}: {stage.splitlines()[0]}"


def settings_fields(project: Path) -> list[str]:
    """The variables the generated Settings class reads: its annotated fields."""
    tree = ast.parse((project / "backend" / "app" / "core" / "config.py").read_text())
    (settings,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    return [
        node.target.id
        for node in settings.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    ]


def test_env_example_lists_every_setting(render, answers):
    project = render(**answers)
    fields = settings_fields(project)
    assert "ENVIRONMENT" in fields
    assert ("DATABASE_URL" in fields) == (answers["database"] != "none")
    listed = re.findall(r"^(?:# )?([A-Z_]+)=", (project / ".env.example").read_text(), re.M)
    assert set(fields) <= set(listed), set(fields) - set(listed)
    assert {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"} <= set(listed)


def test_production_compose_hardens_as_answered(render, answers):
    project = render(**answers)
    services = yaml.safe_load((project / "docker-compose.production.yml").read_text())["services"]
    base = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    hardened = answers["production_hardening"]
    names = ["backend"] + (["migrate"] if answers["database"] != "none" else [])
    # The worker runs the backend's image: it gets the same hardening.
    names += ["worker"] if answers.get("task_queue", "none") != "none" else []
    for name in names:
        service = services[name]
        assert service["user"] == "10001:10001", name
        assert service.get("read_only", False) is hardened, name
        assert service.get("cap_drop") == (["ALL"] if hardened else None), name
        assert ("no-new-privileges:true" in service.get("security_opt", [])) is hardened, name
        assert service.get("init", False) is hardened, name
        limits = service["deploy"]["resources"]["limits"]
        assert {"memory", "pids"} <= set(limits), name
    backend = services["backend"]
    assert (backend.get("environment", {}).get("DOCS_ENABLED") == "false") is hardened
    # Published on loopback unless BACKEND_HOST says otherwise.
    assert base["backend"]["ports"] == ["${BACKEND_HOST:-127.0.0.1}:${BACKEND_PORT:-8000}:8000"]
    if answers["database"] != "none":
        assert base["backend"]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_production_compose_restarts_every_long_running_service_unless_stopped(render, answers):
    project = render(**answers)
    base = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    production = yaml.safe_load((project / "docker-compose.production.yml").read_text())["services"]
    restart = {name: {**base[name], **production.get(name, {})}.get("restart") for name in base}
    # Also after a clean exit (Docker or the host restarting), with no retry limit; a
    # failed migration is left for a person.
    assert restart == {
        name: "no" if name in ONE_OFF_SERVICES else "unless-stopped" for name in base
    }
    # Outside Swarm compose turns it into `on-failure` with a lifetime retry count.
    assert [
        name
        for name, service in production.items()
        if "restart_policy" in service.get("deploy", {})
    ] == []


# Files that exist only with a task queue; `task_queue=none` renders none of them.
TASK_QUEUE_ONLY = [
    "backend/app/jobs",
    "backend/app/api/routes/jobs.py",
    "backend/app/schemas/job.py",
    "backend/tests/test_jobs.py",
    "deploy/k8s/base/worker-deployment.yaml",
]


def test_only_the_chosen_task_queue_is_rendered(render, answers):
    project = render(**answers)
    queued = answers.get("task_queue", default("task_queue")) != "none"
    for relative in TASK_QUEUE_ONLY:
        assert (project / relative).exists() == queued, relative
    for name in COMPOSE_FILES:
        services = set(yaml.safe_load((project / name).read_text())["services"])
        assert ("worker" in services) == queued, name
    base = yaml.safe_load((project / "docker-compose.yml").read_text())
    assert ("redis" in base["services"]) == queued
    requirements = (project / "backend" / "requirements.txt").read_text().lower()
    for package in ("taskiq", "taskiq-redis"):
        assert (f"\n{package}==" in requirements) == queued, package
    assert ("\n# REDIS_URL=" in (project / ".env.example").read_text()) == queued


# The generated tests that need a server, by marker: a build step reaches none.
NEEDS_A_SERVER = {
    "database": lambda answers: answers["database"] in {"postgresql", "mysql"},
    "queue": lambda answers: answers.get("task_queue", default("task_queue")) != "none",
}


def test_release_gate_runs_every_test_that_needs_no_server(render, answers):
    backend = render(**answers) / "backend"
    dockerfile = (backend / "Dockerfile.production").read_text()
    gate = re.search(r"&& pytest (.*)-p no:cacheprovider", dockerfile)
    assert gate, "the release build runs no tests"
    # Coverage is the full suite's, so it is not enforced on a part of it.
    selection = re.fullmatch(r'-m "not (\w+(?: and not \w+)*)" --no-cov ', gate[1])
    assert selection or gate[1] == "", gate[1]
    left_out = set(selection[1].split(" and not ")) if selection else set()
    assert left_out == {marker for marker, needs in NEEDS_A_SERVER.items() if needs(answers)}
    pytest_options = tomllib.loads((backend / "pyproject.toml").read_text())["tool"]["pytest"]
    declared = {marker.split(":")[0] for marker in pytest_options["ini_options"]["markers"]}
    assert left_out <= declared
