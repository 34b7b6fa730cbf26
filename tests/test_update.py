"""`copier update` brings the template's improvements and keeps the project's own changes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from copier import run_copy, run_update

from conftest import REPO

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
CONFLICT_MARKERS = ("<<<<<<<", ">>>>>>>")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


@pytest.fixture
def template_repo(tmp_path: Path) -> Path:
    """A throwaway git repository of the template as it is now, tagged v1.0.0."""
    repo = tmp_path / "template"
    tracked = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard")
    for relative in tracked.splitlines():
        source = REPO / relative
        if source.is_file() and relative.split("/")[0] in {"copier.yml", "template", "locks"}:
            (repo / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / relative)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "Template v1")
    git(repo, "tag", "v1.0.0")
    return repo


def update(project: Path, ref: str) -> None:
    run_update(
        project,
        defaults=True,
        overwrite=True,
        unsafe=False,
        quiet=True,
        vcs_ref=ref,
        conflict="inline",
    )


def test_update_keeps_user_edits_and_brings_template_changes(tmp_path, template_repo):
    project = tmp_path / "project"
    run_copy(str(template_repo), project, defaults=True, unsafe=False, quiet=True, vcs_ref="v1.0.0")
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Generate")

    # The team's own work: an edit to a generated file and a file of its own.
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\n## Team notes\n\nOn call: the payments team.\n")
    (project / "backend" / "app" / "billing.py").write_text('"""Billing."""\n')
    commit_all(project, "Team changes")

    # The template improves: a new ignore rule, released as v1.1.0.
    gitignore = template_repo / "template" / ".gitignore"
    gitignore.write_text(gitignore.read_text() + "*.profile\n")
    commit_all(template_repo, "Ignore profiler output")
    git(template_repo, "tag", "v1.1.0")

    update(project, "v1.1.0")

    assert "On call: the payments team." in readme.read_text()
    assert (project / "backend" / "app" / "billing.py").is_file()
    assert (project / ".gitignore").read_text().endswith("*.profile\n")
    assert "_commit: v1.1.0" in (project / ".copier-answers.yml").read_text()
    for path in project.rglob("*"):
        assert not path.name.endswith(".rej"), path
        if path.is_file() and ".git" not in path.parts:
            text = path.read_text(errors="replace")
            assert not any(marker in text for marker in CONFLICT_MARKERS), path

    commit_all(project, "Update from template v1.1.0")
    update(project, "v1.1.0")
    assert git(project, "status", "--porcelain") == ""
