"""The task queue: a Redis stream read by a consumer group, each job acknowledged only
once it has finished (or been re-queued for a retry), so a job a worker took is never
lost when that worker stops.

The web processes enqueue through `broker`; `python -m app.jobs` runs the worker.
"""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from taskiq import (
    AckableMessage,
    SmartRetryMiddleware,
    TaskiqEvents,
    TaskiqMiddleware,
    TaskiqState,
)
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker
from taskiq.message import TaskiqMessage
from taskiq.receiver import Receiver
from taskiq.utils import maybe_awaitable
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.jobs.heartbeat import beat
from app.jobs.metrics import JobMetricsMiddleware

QUEUE = "jobs"
# Seconds a worker's read waits for a new job before it asks again.
READ_BLOCK = 2
# What a Redis that is down, full or does not answer in time raises; the bounds'
# TimeoutError is an OSError, and taskiq wraps what enqueuing a job raises.
REDIS_FAULTS = (RedisError, OSError, SendTaskError)
# Seconds between two passes of the worker that delete acknowledged jobs from the queue.
TRIM_INTERVAL = 10.0


class BackoffRetryMiddleware(SmartRetryMiddleware):
    """Retries a failed or timed-out job with exponential backoff and jitter.

    The Redis stream has no delayed delivery, so the worker waits out the backoff
    itself before it re-queues the job; the failed delivery stays unacknowledged
    meanwhile, so a worker that stops during the wait loses nothing.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            default_retry_count=settings.JOB_MAX_ATTEMPTS,
            default_retry_label=True,
            default_delay=settings.JOB_RETRY_DELAY,
            max_delay_exponent=settings.JOB_RETRY_MAX_DELAY,
        )

    def make_delay(self, message: TaskiqMessage, retries: int) -> float:
        delay: float = min(
            self.default_delay * 2 ** (retries - 1), self.max_delay_exponent
        )
        # Jitter spreads the retries of jobs that failed together.
        return delay * random.uniform(0.5, 1.0)  # noqa: S311

    async def on_send(
        self, kicker: AsyncKicker[Any, Any], message: TaskiqMessage, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        await kicker.kiq(*message.args, **message.kwargs)


class ResultFirstReceiver(Receiver):
    """taskiq's receiver, except that a job whose result Redis refused (full, or away)
    stays unacknowledged instead of being acknowledged without it: another worker
    claims it after the claim delay and runs it again, until its result is stored."""

    async def callback(
        self, message: bytes | AckableMessage, raise_err: bool = False
    ) -> None:
        # Told to raise, taskiq logs the failed write and skips the acknowledgement.
        try:
            await super().callback(message, raise_err=True)
        except REDIS_FAULTS:
            pass
        except Exception:
            # Logged by taskiq. A result that cannot be stored at all (it does not
            # serialize) never will be: acknowledged, as taskiq does, not run for good.
            if isinstance(message, AckableMessage):
                await maybe_awaitable(message.ack())


def connection_options(settings: Settings) -> dict[str, Any]:
    """How every connection to Redis is made: a Redis that is down or does not answer
    is an error within a bound, not a hang; after a Redis restart, the pooled
    connections it closed are reopened instead of failing the request."""
    return {
        "socket_connect_timeout": settings.REDIS_TIMEOUT,
        # A worker's read blocks up to READ_BLOCK by design before Redis answers it.
        "socket_timeout": settings.REDIS_TIMEOUT + READ_BLOCK,
        "retry": Retry(ExponentialBackoff(cap=1, base=0.1), 3),
    }


def _stream_id(entry_id: bytes) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split(b"-")
    return int(milliseconds), int(sequence)


async def trim_acknowledged(redis: Redis, stream: str) -> int:
    """Deletes the entries of `stream` that every consumer group has read and
    acknowledged, and returns how many: acknowledging a job leaves its entry in the
    stream, which would otherwise grow for good. An entry a group has yet to read or
    to acknowledge is never deleted."""
    oldest_kept = []
    for group in await redis.xinfo_groups(stream):
        pending = await redis.xpending(stream, group["name"])
        if pending["pending"]:
            oldest_kept.append(_stream_id(pending["min"]))
        else:
            # Every entry up to the last one delivered is acknowledged.
            milliseconds, sequence = _stream_id(group["last-delivered-id"])
            oldest_kept.append((milliseconds, sequence + 1))
    if not oldest_kept:
        return 0
    milliseconds, sequence = min(oldest_kept)
    # Exact, not approximate (~), so no acknowledged entry outlives a pass.
    trimmed: int = await redis.xtrim(
        stream, minid=f"{milliseconds}-{sequence}", approximate=False
    )
    return trimmed


async def keep_trimmed() -> None:
    """Trims the queue every TRIM_INTERVAL seconds, for as long as the worker runs."""
    while True:
        # Redis down or full: the next pass trims what this one could not.
        with contextlib.suppress(*REDIS_FAULTS):
            async with Redis(connection_pool=broker.connection_pool) as redis:
                await trim_acknowledged(redis, broker.queue_name)
        await asyncio.sleep(TRIM_INTERVAL)


def middlewares(settings: Settings) -> list[TaskiqMiddleware]:
    chosen: list[TaskiqMiddleware] = [BackoffRetryMiddleware(settings)]
    if settings.METRICS_ENABLED:
        chosen.append(JobMetricsMiddleware(settings.METRICS_PORT))
    return chosen


def create_broker(settings: Settings) -> RedisStreamBroker:
    # A delivery unacknowledged this long belongs to a worker that died: another
    # worker claims it. Longer than any attempt with its backoff, so a job that is
    # still running is never taken twice.
    claim_after = 2 * (settings.JOB_TIMEOUT + settings.JOB_RETRY_MAX_DELAY)
    return (
        RedisStreamBroker(
            url=settings.REDIS_URL,
            queue_name=QUEUE,
            consumer_group_name=QUEUE,
            idle_timeout=int(claim_after * 1000),
            # Guards one claim command; a worker stopped while holding it must not
            # keep the others from reading for longer than this.
            unacknowledged_lock_timeout=1,
            xread_block=READ_BLOCK * 1000,
            **connection_options(settings),
        )
        .with_result_backend(
            RedisAsyncResultBackend(
                settings.REDIS_URL,
                result_ex_time=settings.JOB_RESULT_TTL,
                prefix_str=f"{QUEUE}:result",
                **connection_options(settings),
            )
        )
        .with_middlewares(*middlewares(settings))
    )


broker = create_broker(get_settings())


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _start_worker(state: TaskiqState) -> None:
    # The worker process may be started afresh (forkserver, Python 3.14's default),
    # without the logging its supervisor configured.
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    state.heartbeat = asyncio.create_task(beat())
    state.trimming = asyncio.create_task(keep_trimmed())


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _stop_background_tasks(state: TaskiqState) -> None:
    for task in (state.heartbeat, state.trimming):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class QueueClient:
    """A web process's use of the queue. The broker starts on first use, not when the
    process boots: the app starts and serves without Redis, and while Redis is down
    each request to the queue fails (a 503) and the next one tries again."""

    def __init__(self) -> None:
        self.started = False

    async def start(self) -> None:
        # Declares the consumer group before the first enqueue: a group declared
        # later would skip the jobs enqueued before it.
        if not self.started:
            await broker.startup()
            self.started = True


queue_client = QueueClient()


@contextlib.asynccontextmanager
async def connected(_app: Any) -> AsyncIterator[None]:
    """Closes the web process's connections to the queue when it stops."""
    try:
        yield
    finally:
        await broker.shutdown()
