"""Break the template on purpose, one breakage at a time, and check that the tests notice.

Each breakage of tests/mutations.yml names a file, an exact text and its replacement, and
the cheapest test selection that must catch it (pytest arguments). For each, the current
working tree is copied to a temporary Git repository (the working tree itself is never
touched), the breakage applied and committed, and the selection run there: exit status 1
(tests failed) is "caught", 0 is "missed", a skipped test or anything else is an error.
A text that is no longer in its file is an error too, so the list cannot silently rot as
the template changes. Database servers come from TEST_POSTGRES_URL / TEST_MYSQL_URL, as
for `make test`.

First, each distinct selection runs once on the unbroken copy and must pass: a selection
that fails anyway would prove nothing.

    python scripts/mutations.py                  # every breakage
    python scripts/mutations.py --only NAME ...  # some of them
    python scripts/mutations.py --list
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MUTATIONS = REPO / "tests" / "mutations.yml"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q"]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    catch: str

    def apply(self, tree: Path) -> None:
        path = tree / self.file
        text = path.read_text()
        if self.find not in text:
            raise SystemExit(f"{self.name}: the text to break is no longer in {self.file}")
        path.write_text(text.replace(self.find, self.replace))


def load(path: Path = MUTATIONS) -> list[Mutation]:
    mutations = [Mutation(**entry) for entry in yaml.safe_load(path.read_text())]
    names = [mutation.name for mutation in mutations]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SystemExit(f"{path}: names used twice: {sorted(duplicates)}")
    return mutations


def git(tree: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=mutations", "-c", "user.email=mutations@localhost", *args],
        cwd=tree,
        check=True,
        capture_output=True,
    )


def copy_tree(destination: Path) -> Path:
    """The working tree as it is (tracked and untracked, ignored files aside), committed
    to a fresh repository: the template's tests render from its HEAD."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for relative in filter(None, listed):
        source = REPO / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(destination, "init", "--quiet")
    git(destination, "add", "--all")
    git(destination, "commit", "--quiet", "--message", "copy")
    return destination


def run_selection(tree: Path, catch: str) -> tuple[int, float, str]:
    """pytest's exit status, the seconds taken and what it reported; a skipped test makes
    the status -1, as a skip proves nothing either way."""
    started = time.monotonic()
    # Without CI, where a skip would fail the run and pass for a catch.
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    result = subprocess.run(
        [*PYTEST, "-rs", *shlex.split(catch)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    # The summary, and the first failed test (a generated suite's, inside the outer one).
    summary = lines[-1] if lines else ""
    failure = next((line.lstrip("E ").strip() for line in lines if "FAILED " in line), "")
    status = -1 if " skipped" in summary else result.returncode
    return status, time.monotonic() - started, f"{summary}; {failure[:160]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these breakages only")
    parser.add_argument("--list", action="store_true", help="list the breakages and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbroken runs")
    options = parser.parse_args()

    mutations = load()
    if options.only:
        unknown = set(options.only) - {mutation.name for mutation in mutations}
        if unknown:
            parser.error(f"unknown breakages: {sorted(unknown)}")
        mutations = [mutation for mutation in mutations if mutation.name in options.only]
    if options.list:
        for mutation in mutations:
            print(f"{mutation.name:40} {mutation.file}  ->  {mutation.catch}")
        return 0

    started = time.monotonic()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mutations-") as scratch:
        pristine = copy_tree(Path(scratch) / "pristine")
        for mutation in mutations:  # every text must still be there before anything runs
            mutation.apply(Path(shutil.copytree(pristine, Path(scratch) / "probe")))
            shutil.rmtree(Path(scratch) / "probe")
        if not options.no_baseline:
            for catch in dict.fromkeys(mutation.catch for mutation in mutations):
                status, seconds, last = run_selection(pristine, catch)
                verdict = "passes" if status == 0 else f"FAILS UNBROKEN ({status})"
                failures += status != 0
                print(f"baseline  {verdict:12} {seconds:6.1f} s  {catch}  [{last}]", flush=True)
        for mutation in mutations:
            tree = Path(shutil.copytree(pristine, Path(scratch) / "mutant"))
            mutation.apply(tree)
            git(tree, "commit", "--quiet", "--all", "--message", mutation.name)
            status, seconds, last = run_selection(tree, mutation.catch)
            verdict = {-1: "SKIPPED", 0: "MISSED", 1: "caught"}.get(status, f"ERROR ({status})")
            failures += status != 1
            print(f"{verdict:8} {seconds:6.1f} s  {mutation.name}  [{last}]", flush=True)
            shutil.rmtree(tree)

    total = time.monotonic() - started
    print(f"{len(mutations)} breakages, {failures} not caught or in error, {total / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
