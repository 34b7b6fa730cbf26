"""Prometheus metrics of the HTTP requests, and the endpoint that serves every metric.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py): each worker writes
its samples to files there and any worker reads them all, so every scrape sees the sum
over the workers, whichever one answers it. /metrics is served on METRICS_PORT only,
a port gunicorn listens on besides the API's: publishing the API never publishes it.
"""

import os
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

# A path that matches no route is labelled with this one value, never with the path:
# any client could otherwise add series without bound.
UNMATCHED_ROUTE = "unmatched"
# Likewise for methods: any other is labelled OTHER.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
LABELS = ("method", "route", "status")

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
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# livesum: the sum over the workers alive, so a dead worker's requests stop counting.
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being answered",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


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
        # Each label set's counter and histogram: `labels()` takes a lock and checks
        # the values on every call, a third of what recording a request costs.
        self.series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

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
            await self.app(scope, receive, send)
            return
        # The port the connection came in on, not the Host header a client chooses.
        server = scope.get("server")
        if server is not None and server[1] == self.port:
            serve = self.export if scope["path"] == "/metrics" else _not_found
            await serve(scope, receive, send)
            return
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
            labels = (method, self.route_template(scope), f"{status // 100}xx")
            if (series := self.series.get(labels)) is None:
                series = (REQUESTS.labels(*labels), DURATION.labels(*labels))
                self.series[labels] = series
            series[0].inc()
            series[1].observe(elapsed)
