"""Metrics and the dashboard: where the metrics port is reachable, what the Grafana
dashboard queries, and, natively under gunicorn, that the workers' counts add up."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from conftest import DATABASES, Renderer, default, run

METRICS_PORT = default("metrics_port")
# Grafana's variables, replaced by what Grafana would put there before the parse.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": "job"}
PANELS = {"Request rate by route", "Error rate", "Latency percentiles", "Requests in flight"}
POOL_PANEL = "Database pool usage"

by_database = pytest.mark.parametrize("database", DATABASES)


def dashboard(project: Path) -> dict[str, Any]:
    (path,) = (project / "deploy" / "grafana").glob("*-dashboard.json")
    return json.loads(path.read_text())


def queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def series_names(node: Any) -> set[str]:
    """The metric names a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        return {node.name}
    if isinstance(node, promql_parser.MatrixSelector):
        return series_names(node.vector_selector)
    children = [getattr(node, name, None) for name in ("expr", "lhs", "rhs", "param", "args")]
    names: set[str] = set()
    for child in children:
        for item in child if isinstance(child, list) else [child]:
            if item is not None:
                names |= series_names(item)
    return names


def query_series(board: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for expr in queries(board):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        names |= series_names(promql_parser.parse(expr))
    return names


@by_database
def test_compose_reaches_the_metrics_port_on_its_network_and_never_publishes_it(
    render: Renderer, database: str
) -> None:
    project = render(database=database)
    base = yaml.safe_load((project / "docker-compose.yml").read_text())
    backend = base["services"]["backend"]
    assert backend["expose"] == [str(METRICS_PORT)]
    for name in ("docker-compose.yml", "docker-compose.production.yml"):
        services = yaml.safe_load((project / name).read_text())["services"]
        published = [str(port) for port in services["backend"].get("ports", [])]
        assert not [port for port in published if str(METRICS_PORT) in port], name
    for name in ("Dockerfile", "Dockerfile.production"):
        dockerfile = (project / "backend" / name).read_text()
        assert f"EXPOSE 8000 {METRICS_PORT}\n" in dockerfile, name


@by_database
def test_swarm_labels_the_tasks_for_prometheus_and_publishes_the_api_alone(
    render: Renderer, database: str
) -> None:
    stack = yaml.safe_load((render(database=database) / "deploy/swarm/stack.yml").read_text())
    backend = stack["services"]["backend"]
    assert backend["deploy"]["labels"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    assert [port["target"] for port in backend["ports"]] == [8000]


@by_database
def test_dashboard_shows_rate_errors_latency_in_flight_and_pool_usage(
    render: Renderer, database: str
) -> None:
    board = dashboard(render(database=database))
    titles = {panel["title"] for panel in board["panels"]}
    expected = PANELS | ({POOL_PANEL} if database != "none" else set())
    assert titles == expected
    latency = next(p for p in board["panels"] if p["title"] == "Latency percentiles")
    quantiles = [re.match(r"histogram_quantile\(([\d.]+),", t["expr"]) for t in latency["targets"]]
    assert [float(q[1]) for q in quantiles if q] == [0.5, 0.95, 0.99]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


@by_database
def test_dashboard_keeps_every_field_through_grafanas_own_models(
    render: Renderer, database: str
) -> None:
    """Grafana's foundation SDK, generated from its dashboard schema, drops what the
    schema does not define: what survives a round trip through it is valid."""
    register_default_plugins()
    board = dashboard(render(database=database))
    again = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))

    def kept(ours: Any, theirs: Any, path: str) -> None:
        if isinstance(ours, dict):
            for key, value in ours.items():
                assert key in theirs, f"{path}/{key} is not in Grafana's schema"
                kept(value, theirs[key], f"{path}/{key}")
        elif isinstance(ours, list):
            assert len(ours) == len(theirs), path
            for index, (mine, its) in enumerate(zip(ours, theirs, strict=True)):
                kept(mine, its, f"{path}[{index}]")
        else:
            assert ours == theirs, path

    kept(board, again, "")


@by_database
def test_every_variant_queries_only_series_the_sqlite_run_exports(
    render: Renderer, database: str
) -> None:
    """The native run below checks the sqlite dashboard against the live exposition; the
    other variants' dashboards may ask for no series that one does not."""
    names = query_series(dashboard(render(database=database)))
    assert names
    assert names <= query_series(dashboard(render(database="sqlite")))


# --- Natively under gunicorn ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def wait_for_log(gunicorn: dict[str, Any], line: str, times: int) -> None:
    deadline = time.monotonic() + 60
    while gunicorn["log"].read_text().count(line) < times:
        assert gunicorn["server"].poll() is None, gunicorn["log"].read_text()
        assert time.monotonic() < deadline, gunicorn["log"].read_text()
        time.sleep(0.1)


@pytest.fixture
def gunicorn(render: Renderer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The sqlite variant installed from its lock and served by gunicorn with two workers
    on free ports, as the production image runs it."""
    backend = tmp_path / "backend"
    shutil.copytree(render(database="sqlite") / "backend", backend)
    uv = Path(sys.executable).with_name("uv")
    run(uv, "venv", "--quiet", "--python", sys.executable, ".venv", cwd=backend)
    run(
        *(uv, "pip", "sync", "--quiet", "--require-hashes", "requirements.txt"),
        cwd=backend,
        env={"VIRTUAL_ENV": str(backend / ".venv")},
    )
    api, metrics = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "WEB_CONCURRENCY": "2",
        "METRICS_PORT": str(metrics),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
    }
    binds = ["-b", f"127.0.0.1:{api}", "-b", f"127.0.0.1:{metrics}"]
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [backend / ".venv" / "bin" / "gunicorn", "app.main:app", *binds],
        cwd=backend,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    served = {
        "api": f"http://127.0.0.1:{api}",
        "metrics": f"http://127.0.0.1:{metrics}/metrics",
        "dir": metrics_dir,
        "server": server,
        "log": tmp_path / "gunicorn.log",
        "backend": backend,
    }
    try:
        # Both workers have run the app's start-up: each has opened its pool.
        wait_for_log(served, "Application startup complete", 2)
        yield served
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def requests_total(exposition: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("http_requests_total{")
    )


def load(gunicorn: dict[str, Any], count: int) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: get(f"{gunicorn['api']}/health")[0], range(count)))
    assert statuses == [200] * count


def wait_for_total(gunicorn: dict[str, Any], count: int) -> None:
    """Each worker writes its counts a flush interval after them at most, and the one
    answering a scrape before it answers: wait for the other's."""
    deadline = time.monotonic() + 10
    while requests_total(get(gunicorn["metrics"])[1]) < count and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_two_workers_report_one_total_and_the_dashboards_series(
    gunicorn: dict[str, Any], render: Renderer
) -> None:
    count = 200
    load(gunicorn, count)
    wait_for_total(gunicorn, count)

    # Both workers answered some and wrote their own counts; whichever answers a scrape
    # reports the sum over both.
    assert len(list(gunicorn["dir"].glob("counter_*.db"))) == 2
    scrapes = [get(gunicorn["metrics"])[1] for _ in range(6)]
    assert [requests_total(scrape) for scrape in scrapes] == [count] * len(scrapes)
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{gunicorn['api']}/metrics")
    assert refused.value.code == 404

    exported = {
        line.split("{")[0].split(" ")[0]
        for line in scrapes[-1].splitlines()
        if line and not line.startswith("#")
    }
    wanted = query_series(dashboard(render(database="sqlite")))
    assert wanted <= exported, f"the dashboard asks for series never exported: {wanted - exported}"


@pytest.mark.slow
def test_a_killed_workers_written_counts_stay_and_a_stop_writes_every_count(
    gunicorn: dict[str, Any],
) -> None:
    count = 100
    load(gunicorn, count)
    wait_for_total(gunicorn, count)

    # Killed, a worker runs no shut-down: what it wrote stays in the totals, its gauges
    # leave the live sums once the master has reaped it and started another.
    killed = int(next(gunicorn["dir"].glob("counter_*.db")).stem.split("_")[1])
    assert (gunicorn["dir"] / f"gauge_livesum_{killed}.db").exists()
    os.kill(killed, signal.SIGKILL)
    wait_for_log(gunicorn, "Application startup complete", 3)
    assert not (gunicorn["dir"] / f"gauge_livesum_{killed}.db").exists()
    assert requests_total(get(gunicorn["metrics"])[1]) == count

    # Stopped, each worker writes what it has tallied since its last flush.
    load(gunicorn, count)
    gunicorn["server"].terminate()
    assert gunicorn["server"].wait(timeout=30) == 0
    exposition = run(
        gunicorn["backend"] / ".venv" / "bin" / "python",
        "-c",
        "from prometheus_client import CollectorRegistry, generate_latest\n"
        "from prometheus_client.multiprocess import MultiProcessCollector\n"
        "registry = CollectorRegistry()\n"
        "MultiProcessCollector(registry)\n"
        "print(generate_latest(registry).decode())",
        env={"PROMETHEUS_MULTIPROC_DIR": str(gunicorn["dir"])},
    ).stdout
    assert requests_total(exposition) == 2 * count
