"""What the engine reports: pool usage to Prometheus, statements as trace spans."""

from typing import Any

from prometheus_client import Gauge
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.core.metrics import REGISTRY, TALLIES

# livesum: summed over the live workers, each with a pool of its own.
POOL_CHECKED_OUT = TALLIES.gauge(
    Gauge(
        "db_pool_connections_checked_out",
        "Database connections lent out by the pool",
        multiprocess_mode="livesum",
        registry=REGISTRY,
    )
)
POOL_SIZE = Gauge(
    "db_pool_size",
    "Connections the pool keeps open, and lends out at most",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


def observe_pool(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        POOL_SIZE.set(pool.size())
    # Counted as they happen, and written with the request tallies: a scrape may be
    # answered by another worker, which cannot look into this one's pool.
    event.listen(pool, "checkout", lambda *_: POOL_CHECKED_OUT.inc())
    event.listen(pool, "checkin", lambda *_: POOL_CHECKED_OUT.dec())


def trace_queries(engine: AsyncEngine) -> None:
    """A client span for each statement, a child of the span of the request.

    Written here on SQLAlchemy's events: OpenTelemetry's own SQLAlchemy instrumentation
    declares itself for SQLAlchemy below 2.1 only.
    """
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    tracer = trace.get_tracer(__name__)
    url = engine.url
    common = {"db.system.name": engine.dialect.name, "db.namespace": url.database or ""}
    if url.host:
        common["server.address"] = url.host

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _start(
        _connection: Any,
        _cursor: Any,
        statement: str,
        _params: Any,
        context: Any,
        _many: bool,
    ) -> None:
        operation = (
            statement.split(maxsplit=1)[0].upper() if statement.strip() else "SQL"
        )
        context.span = tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={
                **common,
                "db.operation.name": operation,
                "db.query.text": statement,
            },
        )

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _end(
        _connection: Any,
        _cursor: Any,
        _statement: str,
        _params: Any,
        context: Any,
        _many: bool,
    ) -> None:
        context.span.end()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _fail(exception: ExceptionContext) -> None:
        span = getattr(exception.execution_context, "span", None)
        if span is not None:
            span.set_status(
                StatusCode.ERROR, type(exception.original_exception).__name__
            )
            span.end()
