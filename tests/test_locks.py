"""The locks match the dependency lists they were compiled from, every rendering ships
its variant's lock byte for byte, and a project's own `make lock` writes them as the
template does. No network: stale means re-run scripts/lock.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO, Renderer, run


def load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", REPO / "scripts" / "lock.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = load_lock_script()
VARIANTS = list(LOCK.VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_locks_are_fresh(variant: str) -> None:
    digest = LOCK.input_digest(LOCK.render_pyproject(variant))
    for name in LOCK.LOCK_FILES:
        lock = REPO / "locks" / variant / name
        assert LOCK.recorded_digest(lock) == digest, (
            f"{lock.relative_to(REPO)} is stale: run `python scripts/lock.py {variant}`"
        )


HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def pinned_hashes(text: str) -> dict[str, list[str]]:
    """Each requirement line of a lock, with the hashes of its continuation lines."""
    entries: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line and line[0].isalnum():
            current = line.removesuffix("\\").strip()
            entries[current] = []
        elif current and line.startswith(" "):
            entries[current] += HASH.findall(line)
    return entries


@pytest.mark.parametrize("variant", VARIANTS)
def test_locks_pin_every_package_with_its_own_hashes(variant: str) -> None:
    for name in LOCK.LOCK_FILES:
        text = (REPO / "locks" / variant / name).read_text()
        entries = pinned_hashes(text)
        assert entries, name
        unpinned = [pin for pin in entries if "==" not in pin]
        assert not unpinned, f"{name}: not pinned to one version: {unpinned}"
        unhashed = [pin for pin, hashes in entries.items() if not hashes]
        assert not unhashed, f"{name}: pinned without a hash: {unhashed}"
        assert text.endswith("\n"), name
        assert not text.endswith("\n\n"), name


def test_requirement_templates_only_include_the_locks() -> None:
    backend = REPO / "template" / "backend"
    for name in LOCK.LOCK_FILES:
        expected = '{% include "locks/" ~ lock_variant ~ "/' + name + '" %}'
        assert (backend / f"{name}.jinja").read_text() == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendering_ships_the_lock_byte_for_byte(render: Renderer, variant: str) -> None:
    database, task_queue = LOCK.VARIANTS[variant]
    project = render(database=database, task_queue=task_queue)
    for name in LOCK.LOCK_FILES:
        rendered = (project / "backend" / name).read_bytes()
        assert rendered == (REPO / "locks" / variant / name).read_bytes(), name


# Stand-ins: `docker compose run ... backend COMMAND` runs COMMAND in backend/; `uv`
# records its arguments and "resolves" to the body of the lock the template ships.
FAKE_DOCKER = f"""#!{sys.executable}
import os, sys
command = sys.argv[sys.argv.index("backend") + 1 :]
os.chdir("backend")
os.execvp(command[0], command)
"""
FAKE_UV = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
with open(os.environ["UV_CALLS"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
outputs = zip(sys.argv, sys.argv[1:])
output = next(path for option, path in outputs if option in ("-o", "--output-file"))
shipped = Path(os.environ["SHIPPED_LOCKS"], output).read_text().splitlines(keepends=True)
Path(output).write_text("".join(line for line in shipped if not line.startswith("#")))
"""


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def make_lock(project: Path, bin_dir: Path, env: dict[str, str]) -> dict[str, bytes]:
    """`make lock` in a copy of `project`, docker standing in, `bin_dir` first on PATH;
    the locks it wrote."""
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    copy = bin_dir.parent / "project"
    shutil.copytree(project, copy)
    run("make", "lock", cwd=copy, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env})
    return {name: (copy / "backend" / name).read_bytes() for name in LOCK.LOCK_FILES}


def shipped(variant: str) -> dict[str, bytes]:
    return {name: (REPO / "locks" / variant / name).read_bytes() for name in LOCK.LOCK_FILES}


@pytest.mark.parametrize("variant", ["postgresql", "none-taskiq"])
def test_make_lock_writes_the_locks_as_the_template_does(
    render: Renderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    """Same uv options and header on both sides, so a project that re-locked still
    takes a template release's lock refresh as a clean merge at `copier update`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(FAKE_UV)
    (bin_dir / "uv").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setenv("SHIPPED_LOCKS", str(REPO / "locks" / variant))

    # The template's side: what scripts/lock.py compiles for the variant's pyproject.
    template = tmp_path / "template"
    template.mkdir()
    (template / "pyproject.toml").write_text(LOCK.render_pyproject(variant))
    monkeypatch.setenv("UV_CALLS", str(tmp_path / "template-calls.jsonl"))
    LOCK.compile_locks(template, str(bin_dir / "uv"))

    database, task_queue = LOCK.VARIANTS[variant]
    project = render(database=database, task_queue=task_queue)
    relocked = make_lock(project, bin_dir, {"UV_CALLS": str(tmp_path / "project-calls.jsonl")})

    assert calls(tmp_path / "project-calls.jsonl") == calls(tmp_path / "template-calls.jsonl")
    assert relocked == shipped(variant)
    assert relocked == {name: (template / name).read_bytes() for name in LOCK.LOCK_FILES}


@pytest.mark.slow
def test_make_lock_of_an_unchanged_project_reproduces_the_shipped_locks(
    render: Renderer, tmp_path: Path
) -> None:
    """The real uv against the package index, as it was when the locks were committed
    (later uploads left out, so the result does not drift): not one byte changes."""
    variant = "postgresql"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python", "uv"):
        (bin_dir / tool).symlink_to(Path(sys.executable).with_name(tool))
    committed = run("git", "log", "-1", "--format=%cI", "--", f"locks/{variant}", cwd=REPO)
    env = {"UV_EXCLUDE_NEWER": committed.stdout.strip()}
    assert make_lock(render(database=variant), bin_dir, env) == shipped(variant)
