"""The questions: good answers render without trust, bad ones are refused before anything
is written, and every question changes what its answer demands."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_copy

from conftest import ASKED, COPIER_YML, REPO, default


def copy(destination: Path, template: Path = REPO, **answers: Any) -> None:
    run_copy(
        str(template),
        destination,
        data=answers,
        defaults=True,
        unsafe=False,  # a plain `copier copy`, without --trust, must work
        quiet=True,
        vcs_ref="HEAD",
    )


def test_defaults_render_without_trust(tmp_path):
    copy(tmp_path / "project")
    assert (tmp_path / "project" / "backend" / "app" / "main.py").is_file()


def test_every_question_has_help_and_a_default():
    for name in ASKED:
        assert COPIER_YML[name].get("help"), name
        assert "default" in COPIER_YML[name], name


@pytest.mark.parametrize(
    ("answers", "allowed"),
    [
        ({"project_name": ""}, "project_name must not be empty"),
        ({"project_name": "   "}, "project_name must not be empty"),
        ({"project_slug": "my service"}, "lowercase letters, digits and single hyphens"),
        ({"project_slug": "MyService"}, "lowercase letters, digits and single hyphens"),
        ({"project_slug": "1service"}, "start with a letter"),
        ({"project_slug": "my--service"}, "single hyphens"),
        ({"project_slug": "service-"}, "not end with a hyphen"),
        ({"project_slug": "s" * 56}, "at most 55 characters"),
        ({"author_name": ""}, "author_name must not be empty"),
        ({"author_email": "team"}, 'an email address like "team@example.com"'),
        ({"author_email": "team@example"}, "an email address"),
        ({"author_email": "a b@example.com"}, "an email address"),
        ({"workers": 0}, "a whole number from 1 to 64"),
        ({"workers": 65}, "a whole number from 1 to 64"),
        ({"workers": "two"}, "a whole number from 1 to 64"),
        ({"workers": 2.5}, "a whole number from 1 to 64"),
        ({"python_version": "2.7"}, "['3.11', '3.12', '3.13', '3.14', '3.15']"),
        ({"database": "oracle"}, "['postgresql', 'mysql', 'sqlite', 'none']"),
        ({"task_queue": "celery"}, "['none', 'taskiq']"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else "",
)
def test_bad_answer_is_refused_with_what_is_allowed_and_nothing_written(
    template, tmp_path, answers, allowed
):
    destination = tmp_path / "project"
    with pytest.raises(ValueError, match=r"question '|Invalid choice") as refused:
        copy(destination, template, **answers)
    assert allowed in str(refused.value)
    assert not destination.exists()


# A value other than the default for each question.
OTHER_ANSWER = {
    "project_name": "Billing API",
    "project_slug": "billing",
    "description": "Bills customers",
    "author_name": "Payments Team",
    "author_email": "payments@example.org",
    "python_version": "3.12",
    "database": "sqlite",
    "workers": 8,
    "production_hardening": False,
    "task_queue": "taskiq",
}


def test_other_answers_cover_every_question():
    assert set(OTHER_ANSWER) == set(ASKED)
    assert all(OTHER_ANSWER[name] != default(name) for name in ASKED)


def fastapi_argument(project: Path, name: str) -> Any:
    """A keyword argument of the app's `FastAPI(...)` call: what its OpenAPI document shows."""
    tree = ast.parse((project / "backend" / "app" / "main.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FastAPI":
            return next(ast.literal_eval(kw.value) for kw in node.keywords if kw.arg == name)
    raise AssertionError("no FastAPI(...) call in app/main.py")


def module_constant(path: Path, name: str) -> Any:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            name
        ]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no constant {name}")


def dockerfile_lines(project: Path, prefix: str) -> list[str]:
    return [
        line.strip().removesuffix("\\").strip()
        for name in ("Dockerfile", "Dockerfile.production")
        for line in (project / "backend" / name).read_text().splitlines()
        if line.strip().startswith(prefix)
    ]


def yaml_file(project: Path, name: str) -> Any:
    return yaml.safe_load((project / name).read_text())


def pyproject(project: Path) -> Any:
    return tomllib.loads((project / "backend" / "pyproject.toml").read_text())["project"]


def setup_python_versions(project: Path) -> list[str]:
    workflow = yaml_file(project, ".github/workflows/ci.yml")
    return [
        step["with"]["python-version"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python@")
    ]


def production_backend(project: Path) -> Any:
    return yaml_file(project, "docker-compose.production.yml")["services"]["backend"]


# What each question must change, read from a rendering, and the value the answer
# demands there (the spec: README's table of questions).
Observation = tuple[Callable[[Path], Any], Callable[[Any], Any]]
OBSERVATIONS: dict[str, list[Observation]] = {
    "project_name": [
        (lambda p: fastapi_argument(p, "title"), lambda name: name),
        (lambda p: (p / "README.md").read_text().splitlines()[0], lambda name: f"# {name}"),
    ],
    "project_slug": [
        (lambda p: yaml_file(p, "docker-compose.yml")["name"], lambda slug: slug),
        (
            lambda p: yaml_file(p, "docker-compose.yml")["services"]["backend"]["image"],
            lambda slug: f"${{BACKEND_IMAGE:-{slug}-backend}}:${{BACKEND_TAG:-latest}}",
        ),
        (
            lambda p: re.findall(r"^IMAGE \?= (.+)$", (p / "Makefile").read_text(), re.M),
            lambda slug: [f"{slug}-backend"],
        ),
        (lambda p: pyproject(p)["name"], lambda slug: slug),
    ],
    "description": [
        (lambda p: fastapi_argument(p, "description"), lambda text: text),
        (lambda p: pyproject(p)["description"], lambda text: text),
    ],
    "author_name": [(lambda p: pyproject(p)["authors"][0]["name"], lambda name: name)],
    "author_email": [(lambda p: pyproject(p)["authors"][0]["email"], lambda email: email)],
    "python_version": [
        (setup_python_versions, lambda version: [version, version]),
        (
            lambda p: dockerfile_lines(p, "ARG PYTHON_VERSION="),
            lambda v: [f"ARG PYTHON_VERSION={v}"] * 2,
        ),
        (lambda p: pyproject(p)["requires-python"], lambda version: f">={version}"),
    ],
    "database": [
        (
            lambda p: sorted(
                line.split("==")[0]
                for line in (p / "backend" / "requirements.txt").read_text().splitlines()
                if line.startswith(("asyncpg==", "aiomysql==", "aiosqlite=="))
            ),
            lambda database: [DRIVERS[database]] if database in DRIVERS else [],
        ),
    ],
    "workers": [
        (
            lambda p: dockerfile_lines(p, "WEB_CONCURRENCY="),
            lambda workers: [f"WEB_CONCURRENCY={workers}"] * 2,
        ),
        (
            lambda p: re.findall(
                r"^# (WEB_CONCURRENCY=.*)$", (p / ".env.example").read_text(), re.M
            ),
            lambda workers: [f"WEB_CONCURRENCY={workers}"],
        ),
    ],
    "production_hardening": [
        (
            lambda p: module_constant(p / "backend/app/core/config.py", "PRODUCTION_HARDENING"),
            lambda hardened: hardened,
        ),
        (
            lambda p: {key: production_backend(p).get(key) for key in ("read_only", "cap_drop")},
            lambda hardened: (
                {"read_only": True, "cap_drop": ["ALL"]}
                if hardened
                else {"read_only": None, "cap_drop": None}
            ),
        ),
        (
            lambda p: production_backend(p).get("environment", {}).get("DOCS_ENABLED"),
            lambda hardened: "false" if hardened else None,
        ),
    ],
    "task_queue": [
        (
            lambda p: sorted(yaml_file(p, "docker-compose.yml")["services"]),
            lambda queue: sorted(
                ["backend", "migrate", "db"] + (["worker", "redis"] if queue != "none" else [])
            ),
        ),
        (
            lambda p: [
                line.split("==")[0]
                for line in (p / "backend" / "requirements.txt").read_text().splitlines()
                if line.startswith("taskiq==")
            ],
            lambda queue: [queue] if queue != "none" else [],
        ),
    ],
}
# The slug the default project name ("My Service") derives.
DEFAULT_SLUG = "my-service"
DRIVERS = {"postgresql": "asyncpg", "mysql": "aiomysql", "sqlite": "aiosqlite"}


def test_every_question_has_observations():
    assert set(OBSERVATIONS) == set(ASKED)


@pytest.mark.parametrize("question", ASKED)
def test_every_question_changes_what_its_answer_demands(render, question):
    baseline = DEFAULT_SLUG if question == "project_slug" else default(question)
    for answer, project in (
        (baseline, render()),
        (OTHER_ANSWER[question], render(**{question: OTHER_ANSWER[question]})),
    ):
        for observe, expected in OBSERVATIONS[question]:
            assert observe(project) == expected(answer), (question, answer)


def test_slug_is_derived_from_the_name(render):
    project = render(project_name="  Billing & Invoicing API 2 ")
    answers = (project / ".copier-answers.yml").read_text()
    assert "project_slug: billing-invoicing-api-2\n" in answers
