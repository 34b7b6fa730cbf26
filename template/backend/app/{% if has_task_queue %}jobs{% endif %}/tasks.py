"""The jobs the worker runs. Each gets retries with backoff and a timeout per attempt
(app.jobs.broker, JOB_* settings); a job is enqueued with its id, so the web side can
make a repeated request return the same job.

A job must not block the event loop, which every job of the worker and its heartbeat
share: blocking work goes to `asyncio.to_thread`, or into a plain `def` job (run in
taskiq's thread pool). A job holding the loop for JOB_TIMEOUT + 15 s gets the worker
ended (app.jobs.heartbeat).
"""

import asyncio
import logging

from taskiq import Context, TaskiqDepends

from app.core.config import get_settings
from app.jobs.broker import broker

logger = logging.getLogger(__name__)


@broker.task(task_name="count_words", timeout=get_settings().JOB_TIMEOUT)
async def count_words(
    text: str,
    seconds: float = 0.0,
    context: Context = TaskiqDepends(),  # noqa: B008 (taskiq's dependency injection)
) -> int:
    """Example job: count the words of `text` after `seconds` of pretend work."""
    logger.info("job %s started", context.message.task_id)
    await asyncio.sleep(seconds)
    return len(text.split())
