"""Prometheus metrics of the jobs, kept by the worker and served on its METRICS_PORT.

A registry of their own: the worker serves the job series only, not the HTTP series
that app.core.metrics defines in every process importing it. One worker process per
container, so the registry is served as it is: no multiprocess files as under gunicorn.
"""

from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from app.core.metrics import BUCKETS, METRICS_PATH

# Jobs run longer than requests: up to JOB_TIMEOUT (30 s by default) and beyond.
DURATION_BUCKETS = (*BUCKETS, 30, 60, 120, 300)

REGISTRY = CollectorRegistry()

STARTED = Counter(
    "jobs_started", "Job attempts started, by task", ("task",), registry=REGISTRY
)
FINISHED = Counter(
    "jobs_finished",
    "Job attempts finished, by task and outcome: success, retried (failed or timed "
    "out, and queued again), failure or timed_out (the last attempt's)",
    ("task", "outcome"),
    registry=REGISTRY,
)
DURATION = Histogram(
    "job_duration_seconds",
    "Time a job attempt ran, by task",
    ("task",),
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "jobs_in_flight", "Jobs running, by task", ("task",), registry=REGISTRY
)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:
        """No log line per scrape."""


def metrics_path_only(export: WSGIApplication) -> WSGIApplication:
    """`export` at METRICS_PATH, a 404 elsewhere (prometheus_client's server answers
    every path with the metrics)."""

    def answer(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if environ["PATH_INFO"] != METRICS_PATH:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        return export(environ, start_response)

    return answer


class MetricsServer:
    """`registry` at METRICS_PATH on `port`, answered from threads of its own: the
    worker has no HTTP server to add it to, and a scrape never waits on its loop."""

    def __init__(self, port: int, registry: CollectorRegistry) -> None:
        self.port = port
        self.registry = registry
        self.httpd: WSGIServer | None = None

    def start(self) -> None:
        # Once per process, however many times its owner starts up.
        if self.httpd is None:
            # Every interface: the scraper reaches the container from outside.
            self.httpd = make_server(
                "",
                self.port,
                metrics_path_only(make_wsgi_app(self.registry)),
                ThreadingWSGIServer,
                handler_class=QuietHandler,
            )
            Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def outcome(result: TaskiqResult[Any]) -> str:
    if not result.is_err:
        return "success"
    # The retry middleware replaces the error of an attempt it queued again.
    if isinstance(result.error, NoResultError):
        return "retried"
    if isinstance(result.error, TimeoutError):
        return "timed_out"
    return "failure"


class JobMetricsMiddleware(TaskiqMiddleware):
    """Counts and times each job attempt by task and outcome, and serves /metrics on
    `port` in the worker process (not where jobs are only enqueued)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.server = MetricsServer(port, REGISTRY)

    def startup(self) -> None:
        if self.broker.is_worker_process:
            self.server.start()

    def shutdown(self) -> None:
        self.server.stop()

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        STARTED.labels(message.task_name).inc()
        IN_FLIGHT.labels(message.task_name).inc()
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        IN_FLIGHT.labels(message.task_name).dec()
        FINISHED.labels(message.task_name, outcome(result)).inc()
        DURATION.labels(message.task_name).observe(result.execution_time)
