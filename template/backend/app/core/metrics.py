"""Prometheus metrics of the HTTP requests, and the endpoints that serve metrics.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py): each worker writes
its samples to files there and any worker reads them all, so every scrape sees the sum
over the workers, whichever one answers it. /metrics is served on METRICS_PORT only,
a port gunicorn listens on besides the API's: publishing the API never publishes it.

A write to those files takes a lock and costs four times one in memory: made request by
request, they took 12 % of what /health serves. So each process tallies its requests
and gauges in memory and writes the tallies in one batch every FLUSH_INTERVAL_S, before
it answers a scrape and when it shuts down. A scrape is at most one interval behind the
other workers and never behind the one answering it; a worker killed rather than
stopped loses at most its last interval's counts.
"""

import asyncio
import os
from bisect import bisect_left
from math import inf
from time import perf_counter

from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_asgi_app,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The one path a metrics port answers; any other is a 404.
METRICS_PATH = "/metrics"
# A path that matches no route is labelled with this one value, never with the path:
# any client could otherwise add series without bound.
UNMATCHED_ROUTE = "unmatched"
# Likewise for methods: any other is labelled OTHER.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
LABELS = ("method", "route", "status")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# prometheus_client's bounds: a duration falls in the first one it does not exceed.
UPPER_BOUNDS = (*BUCKETS, inf)
FLUSH_INTERVAL_S = 1.0

# The *_created series would double the series for no dashboard's use.
disable_created_metrics()  # type: ignore[no-untyped-call]
# The app's own registry rather than prometheus_client's global one: a second import of
# this module (a test loading another rendering) starts afresh instead of clashing.
REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template and status class",
    LABELS,
    registry=REGISTRY,
)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its response",
    LABELS,
    buckets=BUCKETS,
    registry=REGISTRY,
)


class GaugeTally:
    """A gauge's value in this process, written to the gauge at each flush."""

    __slots__ = ("gauge", "value")

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class RequestTally:
    """One label set's requests since the last flush: per bucket, and their seconds."""

    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.buckets = [0] * len(UPPER_BOUNDS)
        self.seconds = 0.0


class Tallies:
    """What this process observed and has not written to the Prometheus values yet."""

    def __init__(self) -> None:
        # By method, route template and status code; the status class is the label.
        self.requests: dict[tuple[str, str, int], RequestTally] = {}
        self.gauges: list[GaugeTally] = []

    def gauge(self, gauge: Gauge) -> GaugeTally:
        tally = GaugeTally(gauge)
        self.gauges.append(tally)
        return tally

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        if (tally := self.requests.get(key)) is None:
            tally = self.requests[key] = RequestTally()
        tally.buckets[bisect_left(UPPER_BOUNDS, seconds)] += 1
        tally.seconds += seconds

    def flush(self) -> None:
        requests, self.requests = self.requests, {}
        for (method, route, status), tally in requests.items():
            labels = (method, route, f"{status // 100}xx")
            REQUESTS.labels(*labels).inc(sum(tally.buckets))
            # Histogram has no public call adding many observations at once: its
            # bucket and sum values are written directly, as `observe` writes them
            # (the tests read the exposition back, bucket by bucket).
            histogram = DURATION.labels(*labels)
            histogram._sum.inc(tally.seconds)
            for bucket, count in zip(histogram._buckets, tally.buckets, strict=True):
                if count:
                    bucket.inc(count)
        for gauge in self.gauges:
            gauge.gauge.set(gauge.value)


TALLIES = Tallies()
# livesum: the sum over the workers alive, so a dead worker's requests stop counting.
IN_FLIGHT = TALLIES.gauge(
    Gauge(
        "http_requests_in_flight",
        "HTTP requests being answered",
        multiprocess_mode="livesum",
        registry=REGISTRY,
    )
)


async def flush_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        TALLIES.flush()


def exposition_registry() -> CollectorRegistry:
    """Every worker's samples under gunicorn; this process's own otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class MetricsMiddleware:
    """Counts and times each request by method, route template and status class, and
    answers METRICS_PORT with /metrics."""

    def __init__(self, app: ASGIApp, *, port: int) -> None:
        self.app = app
        self.port = port
        self.export = make_asgi_app(exposition_registry())
        # Full path template (router prefixes included) by route object.
        self.templates: dict[int, str] = {}

    def route_template(self, scope: Scope) -> str:
        # The router leaves the route it chose in the scope; an included router's
        # route knows its own path only, without the prefixes it was included under.
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ROUTE
        if (template := self.templates.get(id(route))) is None:
            # Looked up on a route's first request: routes can be added until then.
            self.templates = {
                id(context.original_route): context.path_format
                for context in iter_route_contexts(scope["app"].routes)
                if context.path_format
            }
            template = self.templates.setdefault(id(route), route.path)
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.flush_while_running(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # The port the connection came in on, not the Host header a client chooses.
        server = scope.get("server")
        if server is not None and server[1] == self.port:
            await self.serve_metrics(scope, receive, send)
            return
        # The rest of this method runs for every request: kept inline, without
        # another coroutine to await.
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
        status = 500  # unless a response starts: an exception becomes a 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        started = perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = perf_counter() - started
            IN_FLIGHT.dec()
            TALLIES.request(method, self.route_template(scope), status, elapsed)

    async def serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != METRICS_PATH:
            await _not_found(scope, receive, send)
            return
        # This process's own counts are exact in what it answers.
        TALLIES.flush()
        await self.export(scope, receive, send)

    async def flush_while_running(
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The app's lifespan, with the tallies flushed periodically while it runs,
        and once more before the server hears that it has shut down."""
        flushing = asyncio.create_task(flush_periodically())

        async def send_after_flush(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                flushing.cancel()
                TALLIES.flush()
            await send(message)

        try:
            await self.app(scope, receive, send_after_flush)
        finally:
            flushing.cancel()
