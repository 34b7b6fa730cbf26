"""The README's first command: `make project DEST=...` generates a project with the
default answers from this checkout, using the Copier pinned in `.venv`."""

from __future__ import annotations

import yaml

from conftest import ASKED, REPO, default, run

# The test already runs in the installed `.venv`: make must not reinstall it.
MAKE = ("make", "--no-print-directory", "-C", REPO, "-o", ".venv/.installed")


def test_make_project_renders_the_defaults_into_dest(tmp_path):
    destination = tmp_path / "myapp"
    run(*MAKE, "project", f"DEST={destination}")
    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert {name: answers[name] for name in ASKED if name != "project_slug"} == {
        name: default(name) for name in ASKED if name != "project_slug"
    }
    # Where and at which commit it came from: what `copier update` starts from.
    assert answers["_src_path"] == str(REPO)
    assert answers["_commit"]
    assert (destination / "backend" / "app" / "main.py").is_file()


def test_make_project_without_dest_says_how_to_call_it(tmp_path):
    result = run(*MAKE, "project", check=False)
    assert result.returncode != 0
    assert "make project DEST=../myapp" in result.stderr
