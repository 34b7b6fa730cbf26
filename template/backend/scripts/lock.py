"""Re-lock requirements*.txt from pyproject.toml, in the working directory (`make lock`
runs it in the development container; it needs the package index).

The template compiles the locks it ships with this same script, so a project's own
re-lock writes them in the template's format, and a later template release that
refreshes them merges at `copier update` like any other change.

Three locks, each held to the versions of the one before, so all resolve alike: the
runtime, the runtime with trace export (the `telemetry` extra), and both with the
development tools. Each starts with a digest of the dependency lists it was compiled
from, so a stale lock shows without the network.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

LOWEST_PYTHON = "3.11"
# Bump when the compile options change, so every lock reads as stale.
LOCK_FORMAT = "1"
DIGEST_PREFIX = "# input-digest: "
# No header or annotations of uv's own: the digest header says what a lock is from.
COMPILE = [
    "pip",
    "compile",
    "pyproject.toml",
    "--universal",
    "--generate-hashes",
    "--python-version",
    LOWEST_PYTHON,
    "--no-header",
    "--no-annotate",
    "--quiet",
]
# Each lock: what it holds, and its options beyond the common ones.
LOCKS = {
    "requirements.txt": ("runtime", []),
    "requirements-telemetry.txt": (
        "runtime and telemetry",
        ["--extra", "telemetry", "--constraint", "requirements.txt"],
    ),
    "requirements-dev.txt": (
        "runtime, telemetry and development",
        [
            "--extra",
            "telemetry",
            "--group",
            "dev",
            "--constraint",
            "requirements-telemetry.txt",
        ],
    ),
}


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


def compile_locks(directory: Path, uv: str) -> None:
    """Write the locks of `directory`'s pyproject.toml beside it. Versions an existing
    lock pins are kept where the dependency lists still allow them."""
    digest = input_digest((directory / "pyproject.toml").read_text())
    for name, (contents, options) in LOCKS.items():
        # Only uv and this file's own options: no untrusted input.
        command = [uv, *COMPILE, *options, "--output-file", name]
        subprocess.run(command, check=True, cwd=directory)  # noqa: S603
        lock = directory / name
        lock.write_text(
            f"# Locked {contents} dependencies for Python {LOWEST_PYTHON} and newer"
            " on every platform.\n"
            "# Generated file: re-lock with `make lock`.\n"
            f"{DIGEST_PREFIX}{digest}\n" + lock.read_text()
        )


if __name__ == "__main__":
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("lock.py: uv not found")
    compile_locks(Path.cwd(), uv)
