"""The background-job worker of `task_queue=taskiq`: how compose and Kubernetes run it
(fast), and the production stack with the worker and Redis, run by Docker: jobs
enqueued through the API complete, survive a worker's SIGTERM and a Redis restart.

The Docker tests share one stack, in the order written: each leaves it running.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
import yaml
from docker_support import (
    DB_ENV,
    Images,
    Stack,
    answers,
    compose_stack,
    host_port,
    http,
    http_response,
    inspect,
    wait_healthy,
    wait_until,
)
from test_k8s import build, compose_production, environment_names
from test_observability import METRICS_PORT, dashboard, query_series

from conftest import DATABASES, HARDENING, Renderer, run

QUEUE = "taskiq"
QUEUE_ANSWERS = [
    answers(database, hardening, task_queue=QUEUE)
    for database in DATABASES
    for hardening in HARDENING
]
by_queue_answers = pytest.mark.parametrize(
    "chosen", QUEUE_ANSWERS, ids=lambda a: f"{a['database']}-hardening={a['production_hardening']}"
)
WORKER_COMMAND = ["python", "-m", "app.jobs"]
HEARTBEAT = ["python", "-m", "app.jobs.heartbeat"]
# What the worker's shutdown waits for by default: JOB_TIMEOUT + JOB_RETRY_MAX_DELAY + 2.
DEFAULT_SHUTDOWN_WAIT = 30 + 10 + 2
HARDENING_KEYS = ["read_only", "tmpfs", "cap_drop", "security_opt", "init", "user"]
# The worker's series, as the generated README lists them (samples of the histogram:
# its buckets, count and sum).
JOB_SERIES = {
    "jobs_started_total",
    "jobs_finished_total",
    "job_duration_seconds_bucket",
    "job_duration_seconds_count",
    "job_duration_seconds_sum",
    "jobs_in_flight",
}


def seconds(duration: str) -> int:
    """A duration as compose prints it ("1m0s")."""
    unit = {"h": 3600, "m": 60, "s": 1}
    return sum(int(value) * unit[name] for value, name in re.findall(r"(\d+)([hms])", duration))


@by_queue_answers
def test_compose_worker_is_the_backend_image_with_another_command(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    services = compose_production(render(**chosen))
    backend, worker = services["backend"], services["worker"]
    assert worker["image"] == backend["image"]
    assert worker["command"] == WORKER_COMMAND
    assert worker["healthcheck"]["test"] == ["CMD", *HEARTBEAT]
    assert {key: worker.get(key) for key in HARDENING_KEYS} == {
        key: backend.get(key) for key in HARDENING_KEYS
    }
    assert worker["environment"].items() <= backend["environment"].items()
    assert seconds(worker["stop_grace_period"]) > DEFAULT_SHUTDOWN_WAIT


@by_queue_answers
def test_compose_starts_the_backend_and_the_worker_once_redis_is_healthy(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    services = compose_production(render(**chosen))
    for name in ("backend", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


@by_queue_answers
def test_compose_redis_is_overridable_password_protected_durable(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    project = render(**chosen)
    redis = compose_production(project)["redis"]
    source = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]["redis"]
    assert source["image"] == "${REDIS_IMAGE:-redis:7}"
    assert "${REDIS_PASSWORD:?" in " ".join(source["command"])
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == DB_ENV["REDIS_PASSWORD"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (volume,) = redis["volumes"]
    assert (volume["type"], volume["target"]) == ("volume", "/data")
    missing = {key: value for key, value in DB_ENV.items() if key != "REDIS_PASSWORD"}
    refused = run(
        *("docker", "compose", "-f", project / "docker-compose.yml", "config"),
        check=False,
        env={**missing, "REDIS_PASSWORD": ""},
    )
    assert refused.returncode != 0
    assert "set REDIS_PASSWORD in .env" in refused.stderr


@by_queue_answers
def test_kubernetes_worker_runs_like_compose_with_the_server_security(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    project = render(**chosen)
    slug = yaml.safe_load((project / ".copier-answers.yml").read_text())["project_slug"]
    resources = build(project, "production")
    deployments = {d["metadata"]["name"]: d for d in resources if d["kind"] == "Deployment"}
    server = deployments[slug]["spec"]["template"]["spec"]
    pod = deployments[f"{slug}-worker"]["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["args"] == WORKER_COMMAND
    assert worker["image"] == server["containers"][0]["image"]
    assert pod["securityContext"] == {
        key: value for key, value in server["securityContext"].items() if key != "fsGroup"
    }
    assert worker["securityContext"] == server["containers"][0]["securityContext"]
    for probe in ("startup", "liveness", "readiness"):
        assert worker[f"{probe}Probe"]["exec"]["command"] == HEARTBEAT
    assert pod["terminationGracePeriodSeconds"] > DEFAULT_SHUTDOWN_WAIT
    secrets = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]["name"]
        for container in (worker, server["containers"][0])
        for variable in container["env"]
        if variable["name"] == "REDIS_URL"
    }
    assert secrets == {"REDIS_URL": f"{slug}-redis"}
    compose = compose_production(project)["worker"]
    assert set(compose["environment"]) <= environment_names(worker, resources)
    (policy,) = [r for r in resources if r["kind"] == "NetworkPolicy"]
    ports = [port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]]
    assert 6379 in ports


@by_queue_answers
def test_compose_exposes_the_workers_metrics_port_to_the_stack_and_never_publishes_it(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    project = render(**chosen)
    base = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    assert base["worker"]["expose"] == [str(METRICS_PORT)]
    for name in (
        "docker-compose.yml",
        "docker-compose.override.yml",
        "docker-compose.production.yml",
    ):
        worker = yaml.safe_load((project / name).read_text())["services"]["worker"]
        assert "ports" not in worker, name


@by_queue_answers
def test_swarm_labels_the_worker_tasks_for_prometheus_as_the_backends(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    services = yaml.safe_load((render(**chosen) / "deploy/swarm/stack.yml").read_text())["services"]
    worker = services["worker"]
    assert worker["deploy"]["labels"] == services["backend"]["deploy"]["labels"]
    assert worker["deploy"]["labels"]["prometheus.io/port"] == str(METRICS_PORT)
    assert "ports" not in worker


@by_queue_answers
def test_kubernetes_scrapes_the_worker_pods_through_the_policy_of_the_app_metrics(
    render: Renderer, chosen: dict[str, Any]
) -> None:
    resources = build(render(**chosen), "production")
    (worker,) = [
        r
        for r in resources
        if r["kind"] == "Deployment" and r["metadata"]["name"].endswith("-worker")
    ]
    pod = worker["spec"]["template"]
    assert pod["spec"]["containers"][0]["ports"] == [
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
    ]
    services = [r for r in resources if r["kind"] == "Service"]
    (listing,) = [
        s for s in services if s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ]
    (app,) = [s for s in services if s is not listing]
    assert listing["metadata"]["annotations"] == app["metadata"]["annotations"]
    assert listing["spec"]["clusterIP"] == "None"
    assert listing["spec"]["ports"] == [
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # The policy that admits the scraper to the app's metrics port covers the worker pods.
    (policy,) = [r for r in resources if r["kind"] == "NetworkPolicy"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= pod["metadata"]["labels"].items()
    assert any(
        {"port": METRICS_PORT, "protocol": "TCP"} in rule["ports"] and "from" in rule
        for rule in policy["spec"]["ingress"]
    )


@by_queue_answers
def test_dashboard_shows_the_worker_series(render: Renderer, chosen: dict[str, Any]) -> None:
    board = dashboard(render(**chosen))
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Jobs by outcome", "Job duration p95", "Jobs in flight"} <= titles
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    queried = query_series(board)
    assert {"jobs_finished_total", "job_duration_seconds_bucket", "jobs_in_flight"} <= queried
    assert queried - query_series(dashboard(render(database=chosen["database"]))) <= JOB_SERIES


# --- The production stack, run by Docker ---------------------------------------------------


@pytest.fixture(scope="module")
def queue_stack(images: Images, render: Renderer) -> Iterator[Stack]:
    with compose_stack(images, render, "postgresql", True, task_queue=QUEUE) as started:
        yield started


def api(stack: Stack) -> str:
    return f"http://127.0.0.1:{host_port(stack.container('backend'))}/api/jobs"


def enqueue(stack: Stack, text: str, seconds: float = 0) -> str:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    status, body = http(api(stack), "POST", {"text": text, "seconds": seconds}, headers=key)
    assert status == 202, body
    return str(body["id"])


def finished(stack: Stack, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http(f"{api(stack)}/{job_id}")
        if status == 200 and body["status"] != "pending":
            return dict(body)
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still pending after {timeout} s")


def logs(stack: Stack, service: str) -> str:
    return stack.compose("logs", "--no-log-prefix", service).stdout


def redis_cli(stack: Stack, *command: str) -> str:
    return run("docker", "exec", stack.container("redis"), "redis-cli", *command).stdout


def unacknowledged(stack: Stack) -> int:
    return int(redis_cli(stack, "XPENDING", "jobs", "jobs").split()[0])


@pytest.mark.docker
def test_a_job_enqueued_through_the_api_completes(queue_stack: Stack) -> None:
    job_id = enqueue(queue_stack, "jobs run in the worker")
    assert finished(queue_stack, job_id) == {
        "id": job_id,
        "status": "succeeded",
        "result": 5,
        "error": None,
    }


# Run in the backend container: the worker's /metrics over the stack's network, as a
# Prometheus there scrapes it.
SCRAPE = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
"""


def scrape_worker(stack: Stack) -> dict[str, float]:
    """The worker's samples by name and labels, as the exposition writes them
    (`jobs_in_flight{task="count_words"}`)."""
    url = f"http://worker:{METRICS_PORT}/metrics"
    exposition = stack.compose("exec", "-T", "backend", "python", "-c", SCRAPE, url).stdout
    samples = (line.rsplit(" ", 1) for line in exposition.splitlines() if line[:1] not in "#")
    return {sample: float(value) for sample, value in samples}


@pytest.mark.docker
def test_the_worker_serves_its_job_series_to_the_stacks_network(queue_stack: Stack) -> None:
    success = 'jobs_finished_total{outcome="success",task="count_words"}'
    before = scrape_worker(queue_stack).get(success, 0)
    job_id = enqueue(queue_stack, "counted by the worker")
    assert finished(queue_stack, job_id)["status"] == "succeeded"
    after = scrape_worker(queue_stack)
    assert after[success] - before == 1
    # The job series and no others: none of the app's http_* series.
    assert {sample.split("{")[0] for sample in after} == JOB_SERIES


@pytest.mark.docker
def test_sigterm_during_a_long_job_finishes_it_and_loses_nothing(queue_stack: Stack) -> None:
    worker = queue_stack.container("worker")
    job_id = enqueue(queue_stack, "a long job", seconds=3)
    deadline = time.monotonic() + 60
    while f"job {job_id} started" not in logs(queue_stack, "worker"):
        assert time.monotonic() < deadline, "the worker never started the job"
        time.sleep(0.1)
    run("docker", "kill", "--signal", "SIGTERM", worker)
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = inspect("container", worker)["State"]
        if not state["Running"]:
            break
        time.sleep(0.2)
    assert not state["Running"], "the worker did not stop after SIGTERM"
    output = logs(queue_stack, "worker")
    assert "Waiting for 1 running tasks to complete" in output
    # Done before the worker exited, or re-queued and done by the next one.
    queue_stack.compose("start", "worker")
    wait_healthy(worker)
    assert finished(queue_stack, job_id)["result"] == 3
    assert unacknowledged(queue_stack) == 0


@pytest.mark.docker
def test_after_a_redis_restart_new_jobs_run_and_old_results_remain(queue_stack: Stack) -> None:
    earlier = enqueue(queue_stack, "before the restart")
    assert finished(queue_stack, earlier)["status"] == "succeeded"
    redis = queue_stack.container("redis")
    queue_stack.compose("restart", "redis")
    wait_healthy(redis)
    # The append-only file kept the job and its result.
    assert finished(queue_stack, earlier)["result"] == 3
    later = enqueue(queue_stack, "after the restart, once reconnected")
    assert finished(queue_stack, later)["result"] == 5


@pytest.mark.docker
def test_the_worker_deletes_finished_jobs_from_the_stream(queue_stack: Stack) -> None:
    jobs = [enqueue(queue_stack, f"job {n}") for n in range(20)]
    for job_id in jobs:
        assert finished(queue_stack, job_id)["status"] == "succeeded"
    # Acknowledged, then deleted at the worker's next pass: the stream stays bounded.
    wait_until(lambda: redis_cli(queue_stack, "XLEN", "jobs").strip() == "0", "an empty stream")


def post_job(stack: Stack, text: str) -> tuple[int, Any, Message]:
    """POST /api/jobs: the status, the JSON body and the headers."""
    key = {"Idempotency-Key": str(uuid.uuid4())}
    return http_response(api(stack), "POST", {"text": text}, timeout=30, headers=key)


# The largest job text the API takes: 100 000 characters.
LARGEST_TEXT = "word " * 20_000


@pytest.mark.docker
def test_a_full_redis_refuses_new_jobs_with_a_503_keeps_the_queued_ones_and_recovers(
    queue_stack: Stack,
) -> None:
    maxmemory = redis_cli(queue_stack, "CONFIG", "GET", "maxmemory").split()[1]
    assert int(maxmemory) > 0, "Redis has no ceiling of its own: the kernel kills it instead"
    # Jobs stay queued while no worker reads them.
    queue_stack.compose("stop", "worker")
    used = re.search(r"used_memory:(\d+)", redis_cli(queue_stack, "INFO", "memory"))
    assert used
    # Room left for a few dozen of the largest jobs.
    redis_cli(queue_stack, "CONFIG", "SET", "maxmemory", str(int(used[1]) + 4 * 1024**2))
    accepted: list[str] = []
    try:
        for _ in range(500):
            status, body, headers = post_job(queue_stack, LARGEST_TEXT)
            if status != 202:
                break
            accepted.append(body["id"])
        assert status == 503, body
        assert body["detail"].startswith("task queue unavailable"), body
        assert int(headers["Retry-After"]) > 0
    finally:
        redis_cli(queue_stack, "CONFIG", "SET", "maxmemory", maxmemory)
    assert accepted, "Redis was full before the first job"
    status, body, _ = post_job(queue_stack, "room again")
    assert status == 202, body
    queue_stack.compose("start", "worker")
    # Every job taken before Redis was full runs: none was dropped to make room.
    for job_id in [*accepted, body["id"]]:
        assert finished(queue_stack, job_id)["status"] == "succeeded"


def ancestors(parents: dict[str, str], pid: str) -> list[str]:
    chain = []
    while pid in parents:
        pid = parents[pid]
        chain.append(pid)
    return chain


@pytest.mark.docker
def test_a_worker_whose_loop_is_stuck_exits_and_is_restarted(queue_stack: Stack) -> None:
    worker = queue_stack.container("worker")
    wait_healthy(worker)
    restarts = inspect("container", worker)["RestartCount"]
    top = run("docker", "top", worker, "-eo", "pid,ppid,args").stdout.splitlines()[1:]
    parents = {pid: ppid for pid, ppid, _ in (row.split(None, 2) for row in top)}
    commands = {pid: args for pid, _, args in (row.split(None, 2) for row in top)}

    def is_worker_command(pid: str) -> bool:
        return commands.get(pid, "").split()[1:] == WORKER_COMMAND[1:]

    # The worker command's first process supervises; every process below it (the one
    # running the jobs' event loop among them) is stopped, as a blocked loop stops.
    (supervisor,) = [
        pid for pid in commands if is_worker_command(pid) and not is_worker_command(parents[pid])
    ]
    below = [pid for pid in commands if supervisor in ancestors(parents, pid)]
    assert below
    run("kill", "-STOP", *below)
    wait_until(
        lambda: inspect("container", worker)["RestartCount"] > restarts,
        "the stuck worker exited and was restarted",
        timeout=120,
    )
    assert "event loop has not run for" in logs(queue_stack, "worker")
    wait_healthy(worker)
    job_id = enqueue(queue_stack, "after the restart")
    assert finished(queue_stack, job_id)["result"] == 3


# Run in the backend container, with the app's own broker. ENQUEUE puts no-op jobs on
# the queue while the worker is stopped and prints the first's and the last's ids;
# DRAIN, once the worker runs again, times it from the first result to the last.
ENQUEUE = """
import asyncio
from app.jobs.broker import broker
from app.jobs.tasks import count_words

async def main(jobs):
    await broker.startup()
    kicked = []
    for _ in range(0, jobs, 100):
        kicked += await asyncio.gather(*(count_words.kiq("") for _ in range(100)))
    print(kicked[0].task_id, kicked[-1].task_id)
    await broker.shutdown()

asyncio.run(main(2000))
"""
DRAIN = """
import asyncio, sys, time
from app.jobs.broker import broker

async def main(first, last, jobs):
    await broker.startup()
    ready = broker.result_backend.is_result_ready
    while not await ready(first):
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while not await ready(last):
        await asyncio.sleep(0.005)
    print((jobs - 1) / (time.perf_counter() - started))
    await broker.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2], 2000))
"""
# Run in the worker container: the PSS of every process there but this one.
IDLE_PSS = """
import os, pathlib
total = 0
for status in pathlib.Path("/proc").glob("[0-9]*/smaps_rollup"):
    if status.parent.name != str(os.getpid()):
        total += sum(int(line.split()[1]) for line in status.read_text().splitlines()
                     if line.startswith("Pss:"))
print(total / 1024)
"""


@pytest.mark.docker
def test_worker_figures_jobs_per_second_and_idle_pss(queue_stack: Stack) -> None:
    """Figures, not assertions: printed for the README."""
    worker = queue_stack.container("worker")
    wait_healthy(worker)
    idle = float(run("docker", "exec", worker, "python", "-c", IDLE_PSS).stdout)
    queue_stack.compose("stop", "worker")
    backend = ("exec", "-T", "backend", "python", "-c")
    first, last = queue_stack.compose(*backend, ENQUEUE).stdout.split()
    queue_stack.compose("start", "worker")
    rate = float(queue_stack.compose(*backend, DRAIN, first, last).stdout)
    print(f"\nworker: {rate:.0f} no-op jobs/s (one process), idle PSS {idle:.1f} MB")
    assert rate > 0
    assert idle > 0
