#!/usr/bin/env python3
"""Refresh the hash-pinned locks in locks/<variant>/ from each variant's pyproject.

    python scripts/lock.py                   # every variant
    python scripts/lock.py sqlite none-taskiq  # only some

A variant is a database, followed by `-<queue>` when a task queue is chosen: the
answers that change the dependency lists, and nothing else, so the locks stay few.

Each variant's backend/pyproject.toml is rendered with Copier, then compiled with
`uv pip compile --universal --generate-hashes` for Python 3.11 and newer. The first
lines of every lock carry a digest of the dependency lists it was compiled from, so
a test can tell a stale lock without the network (see `input_digest`).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
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
LOWEST_PYTHON = "3.11"
# Bump when the compile options change, so every lock reads as stale.
LOCK_FORMAT = "1"
DIGEST_PREFIX = "# input-digest: "
PYPROJECT = Path("template/backend/pyproject.toml.jinja")
# Runtime; runtime with trace export (the extra `telemetry`); both with the dev tools.
LOCK_FILES = ("requirements.txt", "requirements-telemetry.txt", "requirements-dev.txt")


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


def input_digest(pyproject: str) -> str:
    """Digest of what a lock is compiled from: the dependency lists."""
    data = tomllib.loads(pyproject)
    inputs = {
        "format": LOCK_FORMAT,
        "python": LOWEST_PYTHON,
        "dependencies": data["project"]["dependencies"],
        "extras": data["project"]["optional-dependencies"],
        "dev": data["dependency-groups"]["dev"],
    }
    encoded = json.dumps(inputs, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX)
        if not line.startswith("#"):
            break
    return None


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        sys.exit("lock.py: uv not found (pip install uv)")
    return found


def _compile(pyproject: Path, out: Path, *extra: str) -> str:
    subprocess.run(
        [
            _uv(),
            "pip",
            "compile",
            str(pyproject),
            "--universal",
            "--generate-hashes",
            "--python-version",
            LOWEST_PYTHON,
            "--no-header",
            "--no-annotate",
            "--quiet",
            "-o",
            str(out),
            *extra,
        ],
        check=True,
        # `--group` reads the pyproject.toml of the working directory.
        cwd=pyproject.parent,
        env={**os.environ, "UV_CUSTOM_COMPILE_COMMAND": "make lock"},
    )
    return out.read_text()


def _header(variant: str, what: str, digest: str) -> str:
    database, task_queue = VARIANTS[variant]
    return (
        f"# Locked {what} dependencies (database={database}, task_queue={task_queue})"
        f" for Python"
        f" {LOWEST_PYTHON} and newer on every platform.\n"
        "# Generated file: re-lock with `make lock`.\n"
        f"{DIGEST_PREFIX}{digest}\n"
    )


def lock(variant: str) -> None:
    pyproject_text = render_pyproject(variant)
    digest = input_digest(pyproject_text)
    target = ROOT / "locks" / variant
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pyproject = Path(tmp, "pyproject.toml")
        pyproject.write_text(pyproject_text)
        runtime = _compile(pyproject, Path(tmp, "requirements.txt"))
        # Each further lock is held to the previous one's versions, so the telemetry
        # image and the tests run exactly what the plain image installs.
        telemetry = _compile(
            pyproject,
            Path(tmp, "requirements-telemetry.txt"),
            *("--extra", "telemetry", "--constraint", str(Path(tmp, "requirements.txt"))),
        )
        dev = _compile(
            pyproject,
            Path(tmp, "requirements-dev.txt"),
            *("--extra", "telemetry", "--group", "dev"),
            *("--constraint", str(Path(tmp, "requirements-telemetry.txt"))),
        )
    contents = ("runtime", "runtime and telemetry", "runtime, telemetry and development")
    for name, what, text in zip(LOCK_FILES, contents, (runtime, telemetry, dev), strict=True):
        (target / name).write_text(_header(variant, what, digest) + text)
    print(f"locked {variant}: {digest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", choices=[*VARIANTS, []], default=[])
    args = parser.parse_args()
    for variant in args.variants or VARIANTS:
        lock(variant)


if __name__ == "__main__":
    main()
