"""The worker's liveness: its event loop touches a file; the healthcheck reads its age.

Kept free of heavy imports, so `python -m app.jobs.heartbeat` (the container's
healthcheck and the Kubernetes probe) starts in a fraction of a second.
"""

import asyncio
import sys
import time
from pathlib import Path

# /tmp is the only writable place under a read-only root filesystem.
HEARTBEAT_FILE = Path("/tmp/worker-heartbeat")  # noqa: S108
INTERVAL = 5.0
# Three missed beats: the loop is blocked or the process is gone.
STALE_AFTER = 3 * INTERVAL


async def beat(path: Path = HEARTBEAT_FILE, interval: float = INTERVAL) -> None:
    """Touch `path` every `interval` seconds for as long as the event loop runs."""
    while True:
        await asyncio.to_thread(path.touch)
        await asyncio.sleep(interval)


def is_alive(path: Path = HEARTBEAT_FILE, stale_after: float = STALE_AFTER) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < stale_after


if __name__ == "__main__":
    sys.exit(0 if is_alive() else 1)
