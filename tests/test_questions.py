"""The questions: good answers render without trust, bad ones are refused before anything
is written, and every question changes what is rendered."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest
from copier import run_copy

from conftest import ASKED, COPIER_YML, REPO, default


def copy(destination: Path, **answers: Any) -> None:
    run_copy(
        str(REPO),
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
def test_bad_answer_is_refused_with_what_is_allowed_and_nothing_written(tmp_path, answers, allowed):
    destination = tmp_path / "project"
    with pytest.raises(ValueError, match=r"question '|Invalid choice") as refused:
        copy(destination, **answers)
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


def differing_files(left: Path, right: Path) -> list[str]:
    """Relative paths that differ between two renderings, the answers file aside."""
    comparison = filecmp.dircmp(left, right, ignore=[".copier-answers.yml"])
    found: list[str] = []

    def walk(node: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + name for name in node.left_only + node.right_only)
        found.extend(prefix + name for name in node.diff_files)
        for name, child in node.subdirs.items():
            walk(child, f"{prefix}{name}/")

    walk(comparison, "")
    return found


@pytest.mark.parametrize("question", ASKED)
def test_every_question_changes_what_is_rendered(render, question):
    baseline = render()
    changed = render(**{question: OTHER_ANSWER[question]})
    assert differing_files(baseline, changed)


def test_slug_is_derived_from_the_name(render):
    project = render(project_name="  Billing & Invoicing API 2 ")
    answers = (project / ".copier-answers.yml").read_text()
    assert "project_slug: billing-invoicing-api-2\n" in answers
