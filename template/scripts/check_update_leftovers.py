"""Refuse what an unfinished `copier update` leaves behind: conflict markers and `.rej`
files. Copier exits 0 in both cases, and git's own merge check only looks during a git
merge, so the pre-commit hook runs this on every commit.

Usage: check_update_leftovers.py [FILE ...]; without files it checks the whole working
tree (tracked and untracked files that git does not ignore). Exits 1 on a leftover.
"""

import subprocess
import sys
from pathlib import Path

# Built here so that this file does not hold the markers it looks for.
MARKERS = ("<" * 7, ">" * 7)


def working_tree() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
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


def main(names: list[str]) -> int:
    found = [problem for name in names or working_tree() for problem in leftovers(name)]
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
