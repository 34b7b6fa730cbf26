"""The worker: `python -m app.jobs`. One process per container (scale with replicas);
on SIGTERM it takes no new job and waits for the ones in flight to finish or be
re-queued, then exits."""

import asyncio
import logging
from threading import Thread

from redis.asyncio import Redis
from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.run import run_worker

from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.jobs import heartbeat
from app.jobs.broker import REDIS_FAULTS, connection_options

logger = logging.getLogger(__name__)


async def redis_answers(settings: Settings) -> bool:
    """Whether Redis answers a ping within REDIS_TIMEOUT."""
    try:
        async with (
            asyncio.timeout(settings.REDIS_TIMEOUT),
            Redis.from_url(settings.REDIS_URL, **connection_options(settings)) as redis,
        ):
            await redis.ping()
    except REDIS_FAULTS:
        return False
    return True


def main() -> int | None:
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    # A worker that cannot reach Redis exits rather than hang at start-up: its
    # orchestrator restarts it.
    if not asyncio.run(redis_answers(settings)):
        logger.error(
            "Redis did not answer within REDIS_TIMEOUT (%s s): exiting",
            settings.REDIS_TIMEOUT,
        )
        return 1
    args = WorkerArgs.from_cli(
        [
            "app.jobs.broker:broker",
            "app.jobs.tasks",
            "--workers=1",
            f"--max-async-tasks={settings.WORKER_CONCURRENCY}",
            f"--wait-tasks-timeout={settings.worker_shutdown_timeout}",
            "--ack-type=when_saved",
            "--receiver=app.jobs.broker:ResultFirstReceiver",
            "--no-configure-logging",
            f"--log-level={settings.LOG_LEVEL}",
        ]
    )
    # A job that blocks the loop (which JOB_TIMEOUT cannot cancel) up to JOB_TIMEOUT
    # is slow, not stuck: the worker is ended only once the loop is silent for longer.
    watch = {"stale_after": settings.JOB_TIMEOUT + heartbeat.STALE_AFTER}
    Thread(
        target=heartbeat.watch, kwargs=watch, name="heartbeat-watchdog", daemon=True
    ).start()
    return run_worker(args)


if __name__ == "__main__":
    raise SystemExit(main())
