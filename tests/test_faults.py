"""Faults under load on the production stack: the database stopped, frozen and
restarted, and a worker killed.

Clients send requests back to back while each fault happens. Every answer must be a
200 (201 for a write) or a 503 with a JSON `detail`; a request that takes longer than
the client timeout has hung and fails the test, so the bound on each request is
checked without measuring time. Once the fault is over the same running service
must answer again, with every item it acknowledged still there. Each test prints
its counts of requests, 503s and other failures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

import pytest
from docker_support import (
    SERVER_DATABASES,
    Images,
    Stack,
    compose_stack,
    http,
    inspect,
    wait_for_200,
    wait_healthy,
)

from conftest import Renderer, run

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

# The README's promise with the default settings: a request that needs a database
# that is down or frozen is answered within DATABASE_REQUEST_TIMEOUT (5 s); on
# PostgreSQL, dropping a connection to the frozen server (2 s) and a new connection
# attempt (DATABASE_CONNECT_TIMEOUT, 3 s) can add to it.
PROMISED_SECONDS = 5 + 2 + 3
# Scheduling slack on a loaded 2-core machine; a request still waiting after this
# has hung.
CLIENT_TIMEOUT = PROMISED_SECONDS + 5
CLIENTS = 3
# Longest wait for a fault to show, or for the service to come back from it.
SETTLE = 90
# Requests sent one after another once the fault is over: all must succeed.
AFTERWARDS = 20
# Lists the gunicorn workers: the gunicorn processes with a gunicorn parent and no
# gunicorn children (an init process started as `docker-init -- gunicorn` may sit
# above the master).
LIST_WORKERS = """
import os
parents = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        command = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    if any(part.endswith(b"/gunicorn") or part == b"gunicorn" for part in command):
        parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
print(*sorted(p for p, up in parents.items() if up in parents and p not in parents.values()))
"""


@dataclass
class Outcome:
    started: float
    seconds: float
    # ok: 200 or 201; 503: with a JSON detail; wrong: any other answer; hung: no
    # answer within the client timeout; lost: the connection broke first.
    kind: str
    what: str


def published_url(stack: Stack) -> str:
    published = stack.compose("port", "backend", "8000").stdout.strip()
    return f"http://127.0.0.1:{published.rsplit(':', 1)[1]}"


@dataclass
class Service:
    stack: Stack
    url: str
    seed: dict[str, Any]
    # Items whose creation the service acknowledged with a 201.
    acknowledged: list[dict[str, Any]] = field(default_factory=list)

    def container(self, service: str) -> str:
        return self.stack.container(service)


@pytest.fixture(scope="module", params=SERVER_DATABASES)
def service(request: pytest.FixtureRequest, images: Images, render: Renderer) -> Iterator[Service]:
    """One production stack per database, shared by this module's tests."""
    with compose_stack(images, render, request.param, hardening=True) as stack:
        url = published_url(stack)
        status, seed = http(f"{url}/api/items", "POST", {"name": f"seed-{uuid.uuid4().hex}"})
        assert status == 201, seed
        yield Service(stack, url, seed)


def classify(status: int, body: Any) -> tuple[str, str]:
    if status in (200, 201):
        return "ok", str(status)
    if status == 503 and isinstance(body, dict) and isinstance(body.get("detail"), str):
        return "503", body["detail"]
    return "wrong", f"{status} {body!r}"


class Load:
    """Clients sending reads and writes back to back, each outcome recorded."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        url = self.service.url
        requests: list[tuple[str, str, Any]] = [
            ("GET", "/api/items?limit=5", None),
            ("GET", f"/api/items/{self.service.seed['id']}", None),
            ("POST", "/api/items", None),
        ]
        turn = 0
        while not self.stopping.is_set():
            method, path, body = requests[turn % len(requests)]
            turn += 1
            if method == "POST":
                body = {"name": f"load-{uuid.uuid4().hex}"}
            started = time.monotonic()
            try:
                status, answer = http(f"{url}{path}", method, body, timeout=CLIENT_TIMEOUT)
            except ValueError as error:  # a body that is not JSON
                kind, what = "wrong", repr(error)
            # urllib wraps a timeout while connecting; a body cut short (IncompleteRead)
            # is not an OSError.
            except (OSError, HTTPException) as error:
                cause = getattr(error, "reason", error)
                kind, what = "hung" if isinstance(cause, TimeoutError) else "lost", repr(error)
            else:
                kind, what = classify(status, answer)
                if status == 201:
                    self.service.acknowledged.append(answer)
            self.outcomes.append(Outcome(started, time.monotonic() - started, kind, what))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT + 5)

    def count(self, kind: str, since: float = 0.0) -> int:
        return sum(1 for o in list(self.outcomes) if o.kind == kind and o.started >= since)

    def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + SETTLE
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not seen within {SETTLE} s; {self.summary()}")
            time.sleep(0.1)

    def failures(self, *kinds: str) -> list[str]:
        return [o.what for o in self.outcomes if o.kind in kinds]

    def summary(self) -> str:
        kinds = Counter(o.kind for o in self.outcomes)
        unavailable = [o for o in self.outcomes if o.kind == "503"]
        details = Counter(o.what for o in unavailable)
        # Figures for the README, not assertions.
        took = [o.seconds for o in unavailable] or [0.0]
        return (
            f"{len(self.outcomes)} requests: {kinds['ok']} succeeded, {kinds['503']} got 503"
            f" {dict(details)} in {min(took):.2f}-{max(took):.2f} s,"
            f" {kinds['wrong']} other answers, {kinds['hung']} hung, {kinds['lost']} lost"
        )


def report(request: pytest.FixtureRequest, load: Load) -> None:
    print(f"{request.node.name}: {load.summary()}")


def assert_recovered(service: Service) -> None:
    """The running service answers every request again, and no acknowledged item
    is lost."""
    for _ in range(AFTERWARDS):
        status, body = http(f"{service.url}/api/items?limit=1")
        assert status == 200, body
    for item in [service.seed, *service.acknowledged]:
        assert http(f"{service.url}/api/items/{item['id']}") == (200, item)
    wait_healthy(service.container("backend"))


def database(service: Service, *command: str) -> None:
    run("docker", *command, service.container("db"))


@pytest.mark.parametrize(
    ("fault", "undo"),
    [(["stop", "--time", "5"], ["start"]), (["pause"], ["unpause"])],
    ids=["stopped", "frozen"],
)
def test_database_outage_gets_503_within_the_bound_then_recovers(
    request: pytest.FixtureRequest, service: Service, fault: list[str], undo: list[str]
) -> None:
    with Load(service) as load:
        load.wait_for("a first success", lambda: load.count("ok") > 0)
        database(service, *fault)
        try:
            began = time.monotonic()
            load.wait_for("503s", lambda: load.count("503", since=began) >= CLIENTS)
        finally:
            database(service, *undo)
        ended = time.monotonic()
        load.wait_for("recovery", lambda: load.count("ok", since=ended) >= CLIENTS)
    report(request, load)
    assert load.failures("wrong", "hung", "lost") == []
    assert_recovered(service)


def test_restarted_database_is_used_again(request: pytest.FixtureRequest, service: Service) -> None:
    with Load(service) as load:
        load.wait_for("a first success", lambda: load.count("ok") > 0)
        database(service, "restart", "--time", "5")
        restarted = time.monotonic()
        load.wait_for("recovery", lambda: load.count("ok", since=restarted) >= CLIENTS)
    report(request, load)
    assert load.failures("wrong", "hung", "lost") == []
    assert_recovered(service)


def workers(service: Service) -> list[int]:
    listed = run("docker", "exec", service.container("backend"), "python", "-c", LIST_WORKERS)
    return [int(pid) for pid in listed.stdout.split()]


def test_killed_worker_is_replaced(request: pytest.FixtureRequest, service: Service) -> None:
    before = workers(service)
    assert before, "no gunicorn workers found"
    started_at = inspect("container", service.container("backend"))["State"]["StartedAt"]
    victim = before[0]
    with Load(service) as load:
        load.wait_for("a first success", lambda: load.count("ok") > 0)
        kill = f"import os, signal; os.kill({victim}, signal.SIGKILL)"
        run("docker", "exec", service.container("backend"), "python", "-c", kill)
        killed = time.monotonic()
        load.wait_for(
            "a replacement worker",
            lambda: len(after := workers(service)) == len(before) and victim not in after,
        )
        load.wait_for("service", lambda: load.count("ok", since=killed) >= CLIENTS)
    report(request, load)
    # Only the requests that the killed worker was serving can be lost, as broken
    # connections; nothing gets an error response.
    assert load.count("503") == 0
    assert load.failures("wrong", "hung") == []
    assert len(load.failures("lost")) <= CLIENTS, load.failures("lost")
    # The container itself kept running: gunicorn replaced the worker.
    assert inspect("container", service.container("backend"))["State"]["StartedAt"] == started_at
    assert_recovered(service)


def test_backend_starts_while_the_database_is_down(service: Service) -> None:
    database(service, "stop", "--time", "5")
    try:
        run("docker", "restart", "--time", "10", service.container("backend"))
        # A restart may publish the port anew.
        service.url = published_url(service.stack)
        wait_for_200(f"{service.url}/health")
        status, body = http(f"{service.url}/ready")
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("database")
        status, body = http(f"{service.url}/api/items")
        assert (status, classify(status, body)[0]) == (503, "503")
    finally:
        database(service, "start")
    wait_for_200(f"{service.url}/ready", timeout=SETTLE)
    assert_recovered(service)
