"""Time `copier copy --defaults` of this checkout as a user runs it (the CLI, from
`make project`), apart from the image benchmark: prints the median, minimum and maximum
wall time of --runs copies, and the CPU time of the same runs (less sensitive to other
load on the machine).

    .venv/bin/python bench/copier_copy.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def copy_once(destination: Path, settings: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the children's user and system time) of one copy."""
    cli = Path(sys.executable).with_name("copier")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [cli, "copy", "--quiet", "--defaults", "--vcs-ref", "HEAD", REPO, destination],
        check=True,
        env={**os.environ, "COPIER_SETTINGS_PATH": str(settings)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    changed = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    if changed:
        # Copier then commits the working tree into its clone first: a cost no user pays.
        print("note: the checkout has uncommitted changes; Copier copies them in each run")
    with tempfile.TemporaryDirectory() as scratch:
        # No user settings: the copy a newcomer gets.
        settings = Path(scratch, "settings.yml")
        settings.write_text("{}\n")
        samples = [copy_once(Path(scratch, f"p{run}"), settings) for run in range(runs)]
    for label, values in zip(("wall", "cpu"), zip(*samples, strict=True), strict=True):
        print(
            f"copier copy --defaults, {label}: median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, {runs} runs)"
        )


if __name__ == "__main__":
    main()
