"""Releases and `copier update`: a project generated from any of three releases updates to
the latest one, keeps the team's own edits, and every conflict it leaves is reported by
the project's pre-commit check; the scheduled workflow reports a new release; changing an
answer through an update removes what the old answer rendered."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from copier import run_copy, run_update

from conftest import REPO, TEMPLATE_PARTS, run

# Seconds per test (a git repository of four releases, a copy and an update each).
pytestmark = pytest.mark.slow

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
# What a template release is made of: the paths Copier reads.
MARKERS = ("<" * 7, ">" * 7)
HOOK = "copier-update-leftovers"
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")
LATEST = "v0.4.0"

# Each release changes the template; (path, old text, new text), old "" appends.
RELEASES = {
    "v0.1.0": [],
    "v0.2.0": [
        ("template/.gitignore", "", "\n# Profiler output\n*.profile\n"),
        ("template/README.md.jinja", "## Configuration\n", "## Settings\n"),
    ],
    "v0.3.0": [
        ("template/.editorconfig", "", "root = true\n"),
        ("template/.env.example.jinja", "READY_TIMEOUT=2\n", "READY_TIMEOUT=3\n"),
    ],
    # The latest release changes, among others, a line the team changed too.
    LATEST: [
        ("template/README.md.jinja", "## Routes\n", "## Endpoints\n"),
        ("template/Makefile.jinja", "-backend\n", "-api\n"),
    ],
}
# The team's own work on the generated project: (path, old text, new text).
TEAM_EDITS = [
    ("README.md", "", "\n## Team notes\n\nOn call: the payments team.\n"),
    (".gitignore", "# Local configuration", "/notes/\n\n# Local configuration"),
    ("Makefile", "IMAGE ?= my-service-backend", "IMAGE ?= registry.example.com/payments/api"),
    ("backend/app/billing.py", "", '"""Billing."""\n'),
]
CONFLICTING = "Makefile"


def git(cwd: Path, *args: str) -> str:
    return run("git", *args, cwd=cwd, env=GIT_ENV).stdout


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    if old:
        assert old in text, f"{relative} no longer holds {old!r}"
        text = text.replace(old, new, 1)
    else:
        text += new
    path.write_text(text)


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of this template with four tagged releases, the current
    template being the first."""
    repo = tmp_path_factory.mktemp("template")
    tracked = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard")
    for relative in tracked.splitlines():
        source = REPO / relative
        if source.is_file() and relative.split("/")[0] in TEMPLATE_PARTS:
            (repo / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / relative)
    git(repo, "init", "-q", "-b", "main")
    for version, changes in RELEASES.items():
        for change in changes:
            edit(repo, *change)
        commit_all(repo, f"Release {version}")
        git(repo, "tag", version)
    return repo


@pytest.fixture(scope="session")
def generate(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Copy a project generated from release `ref` with `answers`, and committed, to
    `destination`; each release and answers are generated once per session."""
    generated: dict[tuple[object, ...], Path] = {}

    def _generate(destination: Path, ref: str, **answers: object) -> Path:
        key = (ref, *sorted(answers.items()))
        if key not in generated:
            project = tmp_path_factory.mktemp("generated") / "project"
            run_copy(
                str(template_repo), project, data=answers, defaults=True, quiet=True, vcs_ref=ref
            )
            git(project, "init", "-q", "-b", "main")
            commit_all(project, f"Generate from {ref}")
            generated[key] = project
        shutil.copytree(generated[key], destination, symlinks=True)
        return destination

    return _generate


def update(project: Path, conflict: str, **answers: object) -> None:
    run_update(
        project,
        data=answers,
        defaults=True,
        overwrite=True,
        quiet=True,
        conflict=conflict,
        skip_answered=True,
    )


def hook(project: Path) -> dict[str, tuple[int, list[str]]]:
    """The project's leftovers hook run by pre-commit on the update as Copier left it:
    before anything is staged, as the README says, and on a commit of every change to a
    tracked file (the `.rej` files are new, untracked ones). For each, the exit status and
    the paths (and lines) reported, sorted. Only that hook is configured, from the project's own
    file: the others need the network or the backend's tools."""
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    (entry,) = (
        candidate
        for repo in config["repos"]
        if repo["repo"] == "local"
        for candidate in repo["hooks"]
        if candidate["id"] == HOOK
    )
    config_file = project.parent / "leftovers-hook.yaml"
    config_file.write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [entry]}]}))
    env = {**GIT_ENV, "PRE_COMMIT_HOME": str(project.parent / "pre-commit")}
    run(PRE_COMMIT, "install", "--config", config_file, cwd=project, env=env)
    checks = {
        "run": [PRE_COMMIT, "run", "--config", config_file, HOOK],
        "run --all-files": [PRE_COMMIT, "run", "--config", config_file, "--all-files", HOOK],
        "commit --all": ["git", "commit", "--all", "--quiet", "--message", "Update"],
    }
    reported = {}
    for name, command in checks.items():
        result = run(*command, cwd=project, env=env, check=False)
        # A failing hook's own output follows its status lines, up to a blank line.
        output = (result.stdout + result.stderr).partition("\n\n")[2].partition("\n\n")[0]
        reported[name] = (
            result.returncode,
            sorted(line.split(": ")[0] for line in output.splitlines()),
        )
    return reported


def leftovers(project: Path) -> set[str]:
    """Every `.rej` file and every line with a conflict marker, found independently."""
    found = set()
    for path in project.rglob("*"):
        relative = path.relative_to(project).as_posix()
        if ".git" in path.parts or not path.is_file():
            continue
        if path.suffix == ".rej":
            found.add(relative)
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.startswith(MARKERS):
                found.add(f"{relative}:{number}")
    return found


@pytest.mark.parametrize("conflict", ["rej", "inline"])
@pytest.mark.parametrize("release", ["v0.1.0", "v0.2.0", "v0.3.0"])
def test_update_to_the_latest_release_keeps_team_edits_and_reports_every_conflict(
    tmp_path, generate, release, conflict
):
    project = generate(tmp_path / "project", release)
    for change in TEAM_EDITS:
        edit(project, *change)
    commit_all(project, "Team changes")

    update(project, conflict)

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == LATEST
    # Every template change of the later releases arrived...
    readme = (project / "README.md").read_text()
    assert "## Endpoints\n" in readme
    assert "## Settings\n" in readme
    assert (project / ".gitignore").read_text().endswith("*.profile\n")
    assert (project / ".editorconfig").is_file()
    assert "READY_TIMEOUT=3\n" in (project / ".env.example").read_text()
    # ...every edit of the team stayed, the conflicting one beside the template's line...
    for relative, _, new in TEAM_EDITS:
        if relative != CONFLICTING:
            assert new in (project / relative).read_text(), relative
    found = leftovers(project)
    conflicted = {item.split(":")[0].removesuffix(".rej") for item in found}
    assert conflicted == {CONFLICTING}, found
    team_line = next(new for relative, _, new in TEAM_EDITS if relative == CONFLICTING)
    if conflict == "rej":
        assert found == {f"{CONFLICTING}.rej"}
        assert f"+{team_line}\n" in (project / f"{CONFLICTING}.rej").read_text()
    else:
        assert len(found) == 2, found  # one opening and one closing marker
        assert f"\n{team_line}\n" in (project / CONFLICTING).read_text()

    # ...and the project's pre-commit check reports each leftover once, run as the README
    # says and on a commit of the update, which it refuses. Before anything is staged it
    # sees the `.rej` files, though pre-commit sets unstaged changes aside while it checks
    # (and itself refuses to run on the unmerged files an inline conflict leaves).
    assert hook(project) == {
        "run": (1, sorted(item for item in found if item.endswith(".rej"))),
        "run --all-files": (1, sorted(found)),
        "commit --all": (1, sorted(found)),
    }


def shim(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(("release", "opens_issue"), [("v0.1.0", True), (LATEST, False)])
def test_scheduled_workflow_opens_an_issue_for_a_newer_release(
    tmp_path, generate, release, opens_issue
):
    project = generate(tmp_path / "project", release)
    workflow = yaml.safe_load((project / ".github/workflows/template-update.yml").read_text())
    assert "schedule" in workflow["on"]
    step = workflow["jobs"]["check"]["steps"][-1]
    pinned = step["env"]["COPIER"].removeprefix("copier==")
    assert f"\ncopier=={pinned} " in (REPO / "requirements-dev.txt").read_text()

    # `uvx --from copier==X copier ...` runs this environment's Copier, of that version;
    # `gh` records what it is asked and knows no open issue.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gh-calls"
    shim(bin_dir, "uvx", f'shift 2; exec "{Path(sys.executable).parent}/$@"')
    shim(bin_dir, "gh", f'printf "%s\\n" "$*" >> "{calls}"')
    env = {**step["env"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run("bash", "-e", "-c", step["run"], cwd=project, env=env)

    asked = calls.read_text() if calls.exists() else ""
    created = [call for call in asked.splitlines() if call.startswith("issue create")]
    assert len(created) == opens_issue, asked
    if opens_issue:
        assert f"latest version is {LATEST.removeprefix('v')}" in asked


@pytest.mark.parametrize("conflict", ["rej", "inline"])
def test_switching_database_to_none_removes_the_database_code_and_its_edits(
    tmp_path, generate, conflict
):
    project = generate(tmp_path / "project", LATEST, database="postgresql")
    model = project / "backend/app/models/item.py"
    model.write_text(model.read_text() + "\n# Team: add a price column next.\n")
    own_model = project / "backend/app/models/invoice.py"
    own_model.write_text('"""Invoices."""\n')
    commit_all(project, "Team changes")

    update(project, conflict, database="none")

    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["database"] == "none"
    assert not model.exists()
    for relative in ("backend/alembic.ini", "backend/migrations", "backend/app/db"):
        assert not (project / relative).exists(), relative
    assert "asyncpg" not in (project / "backend/requirements.txt").read_text()
    # A file the template never rendered stays; the edits to the deleted model come
    # back as a `.rej` file that the check refuses, or (inline) only in git history.
    assert own_model.is_file()
    rejected = "backend/app/models/item.py.rej"
    assert leftovers(project) == ({rejected} if conflict == "rej" else set())
    if conflict == "rej":
        assert "+# Team: add a price column next." in (project / rejected).read_text()
    expected = (1, [rejected]) if conflict == "rej" else (0, [])
    assert hook(project) == dict.fromkeys(["run", "run --all-files", "commit --all"], expected)
