#!/usr/bin/env python3
"""Refresh the hash-pinned locks in locks/<variant>/ from each variant's pyproject.

    python scripts/lock.py                   # every variant
    python scripts/lock.py sqlite none-taskiq  # only some

A variant is a database, followed by `-<queue>` when a task queue is chosen: the
answers that change the dependency lists, and nothing else, so the locks stay few.

Each variant's backend/pyproject.toml is rendered with Copier, then compiled afresh
(newest versions) by the generated project's own backend/scripts/lock.py, the script
its `make lock` runs: a project's re-lock and the template's locks share one format.
The first lines of every lock carry a digest of the dependency lists it was compiled
from, so a test can tell a stale lock without the network (see `input_digest`).
"""

import argparse
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("postgresql", "mysql", "sqlite", "none")
TASK_QUEUES = ("none", "taskiq")
# The same names as copier.yml's computed `lock_variant`.
VARIANTS = {
    f"{database}-{queue}" if queue != "none" else database: (database, queue)
    for queue in TASK_QUEUES
    for database in DATABASES
}
PYPROJECT = Path("template/backend/pyproject.toml.jinja")
# The generated project's own lock script: `make lock` runs it.
PROJECT_LOCK = runpy.run_path(str(ROOT / "template/backend/scripts/lock.py"))
LOWEST_PYTHON = PROJECT_LOCK["LOWEST_PYTHON"]
LOCK_FILES = tuple(PROJECT_LOCK["LOCKS"])
input_digest = PROJECT_LOCK["input_digest"]
recorded_digest = PROJECT_LOCK["recorded_digest"]
compile_locks = PROJECT_LOCK["compile_locks"]


def render_pyproject(variant: str) -> str:
    """The backend/pyproject.toml a project generated with `variant`'s answers gets."""
    database, task_queue = VARIANTS[variant]
    import copier  # only this step needs it

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        # Only the questions, the macros they import and this one file: the rest of
        # the template includes the locks that this script is about to write.
        (src / PYPROJECT).parent.mkdir(parents=True)
        shutil.copy(ROOT / "copier.yml", src / "copier.yml")
        shutil.copytree(ROOT / "includes", src / "includes")
        shutil.copy(ROOT / PYPROJECT, src / PYPROJECT)
        copier.run_copy(
            str(src),
            str(dst),
            data={
                "database": database,
                "task_queue": task_queue,
                "python_version": LOWEST_PYTHON,
            },
            defaults=True,
            unsafe=False,
            quiet=True,
        )
        return (dst / "backend" / "pyproject.toml").read_text()


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        sys.exit("lock.py: uv not found (pip install uv)")
    return found


def lock(variant: str) -> None:
    pyproject = render_pyproject(variant)
    target = ROOT / "locks" / variant
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "pyproject.toml").write_text(pyproject)
        compile_locks(Path(tmp), _uv())
        for name in LOCK_FILES:
            shutil.copy(Path(tmp, name), target / name)
    print(f"locked {variant}: {input_digest(pyproject)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", choices=[*VARIANTS, []], default=[])
    args = parser.parse_args()
    for variant in args.variants or VARIANTS:
        lock(variant)


if __name__ == "__main__":
    main()
