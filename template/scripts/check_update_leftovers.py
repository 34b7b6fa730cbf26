"""Refuse what an unfinished `copier update` leaves behind: conflict markers and `.rej`
files. Copier exits 0 in both cases, and git's own merge check only looks during a git
merge, so the pre-commit hook runs this on every commit.

It checks the whole working tree, tracked and untracked files that git does not ignore,
and takes no file names: the `.rej` files are untracked, so a list of tracked or staged
files (what pre-commit passes by default) would miss them. Exits 1 on a leftover.
"""

import argparse
import subprocess
import sys
from pathlib import Path

# Built here so that this file does not hold the markers it looks for.
MARKERS = ("<" * 7, ">" * 7)


def working_tree() -> list[str]:
    # A file an inline conflict left unmerged is listed once, not once per stage.
    listed = subprocess.run(
        [  # noqa: S607
            "git",
            "ls-files",
            "-z",
            "--deduplicate",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [name for name in listed.split("\0") if name]


def leftovers(name: str) -> list[str]:
    path = Path(name)
    if path.suffix == ".rej":
        return [f"{name}: hunks Copier could not apply; apply them by hand, delete it"]
    if not path.is_file():
        return []
    found = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            text = line.decode(errors="replace").rstrip("\r\n")
            if text.startswith(MARKERS) and text[7:8] in {"", " "}:
                found.append(f"{name}:{number}: conflict marker; resolve the conflict")
    return found


def main() -> int:
    found = [problem for name in working_tree() for problem in leftovers(name)]
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    sys.exit(main())
