"""The worker: `python -m app.jobs`. One process per container (scale with replicas);
on SIGTERM it takes no new job and waits for the ones in flight to finish or be
re-queued, then exits."""

from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.run import run_worker

from app.core.config import get_settings
from app.core.logging import configure_logging


def main() -> int | None:
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    args = WorkerArgs.from_cli(
        [
            "app.jobs.broker:broker",
            "app.jobs.tasks",
            "--workers=1",
            f"--max-async-tasks={settings.WORKER_CONCURRENCY}",
            f"--wait-tasks-timeout={settings.worker_shutdown_timeout}",
            "--ack-type=when_saved",
            "--no-configure-logging",
            f"--log-level={settings.LOG_LEVEL}",
        ]
    )
    return run_worker(args)


if __name__ == "__main__":
    raise SystemExit(main())
