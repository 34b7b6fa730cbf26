"""The worker's liveness: its event loop touches a file; the healthcheck reads its age,
and a watchdog in the worker's supervising process ends the worker once the loop has
been silent for longer than any job may hold it.

Kept free of heavy imports, so `python -m app.jobs.heartbeat` (the container's
healthcheck and the Kubernetes probe) starts in a fraction of a second.
"""

import asyncio
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

# /tmp is the only writable place under a read-only root filesystem.
HEARTBEAT_FILE = Path("/tmp/worker-heartbeat")  # noqa: S108
INTERVAL = 5.0
# Three missed beats: the loop is blocked or the process is gone.
STALE_AFTER = 3 * INTERVAL

logger = logging.getLogger(__name__)


async def beat(path: Path = HEARTBEAT_FILE, interval: float = INTERVAL) -> None:
    """Touch `path` every `interval` seconds for as long as the event loop runs."""
    while True:
        # On the loop itself (microseconds on tmpfs), not through its thread pool:
        # jobs that fill the pool with blocking work must not make a running loop
        # look stuck.
        path.touch()  # noqa: ASYNC240
        await asyncio.sleep(interval)


def last_beat(path: Path) -> float:
    """When `path` was last touched (0: never)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def is_alive(path: Path = HEARTBEAT_FILE, stale_after: float = STALE_AFTER) -> bool:
    return time.time() - last_beat(path) < stale_after


def watch(
    path: Path = HEARTBEAT_FILE,
    stale_after: float = STALE_AFTER,
    interval: float = INTERVAL,
) -> None:
    """Kills the worker processes and exits once `path` has not been touched for
    `stale_after` seconds, counted from the watch's start at the earliest.

    Runs in a thread of the supervising process, which a blocked (or stopped) loop in
    a worker process cannot hold up. Docker outside Swarm only marks an unhealthy
    container: exiting is what has its restart policy replace a stuck worker.
    """
    started = time.time()
    while True:
        time.sleep(interval)
        silent = time.time() - max(started, last_beat(path))
        if silent >= stale_after:
            logger.error(
                "the worker's event loop has not run for %.0f s: exiting",
                silent,
            )
            for worker in multiprocessing.active_children():
                worker.kill()
                # Reaped before its supervisor exits, not left to end after it.
                worker.join(timeout=interval)
            # sys.exit in a thread would end the thread alone.
            os._exit(1)


if __name__ == "__main__":
    sys.exit(0 if is_alive() else 1)
