"""The Swarm stack on a real one-node swarm: three replicas, a release rolled out under
load, a release that never gets healthy rolled back, a killed task replaced; with the
task queue, so the worker rolls out and back with the backend, a job enqueued through
the API is run by the worker, and the Redis password stays a secret.

The kernels of the machines these tests run on have no IPVS, so neither the routing
mesh nor the virtual IPs of services work there: the stack under test gives the
backend DNS round robin instead, and the load comes from a container on the stack's
network that resolves the service anew for each request (one connection each, no
retry), so it sees every task DNS offers, as the mesh would.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_support import PREFIX, Images, answers, inspect
from test_worker import QUEUE

from conftest import Renderer, run

pytestmark = pytest.mark.docker

REPLICAS = 3
WORKER_REPLICAS = 1
# The PostgreSQL variant with the task queue: every service the stack can have but
# the MariaDB and SQLite ones, which test_swarm_stack checks as Swarm loads them.
VARIANT = answers("postgresql", task_queue=QUEUE)
# One request at a time, each to a task picked from a fresh DNS answer; the counts are
# printed when the container is stopped.
LOAD = r"""
import json, random, signal, socket, urllib.request
counts = {"ok": 0, "failed": 0, "errors": []}
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
while not stopping:
    try:
        tasks = socket.getaddrinfo("backend", 8000, type=socket.SOCK_STREAM)
        address = random.choice(tasks)[4][0]
        url = f"http://{address}:8000/api/items?limit=1"
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        counts["ok"] += 1
        if counts["ok"] == 1:
            print("first answer", flush=True)
    except Exception as error:
        counts["failed"] += 1
        if len(counts["errors"]) < 5:
            counts["errors"].append(repr(error)[:200])
print(json.dumps(counts), flush=True)
"""
# A release that starts but never passes its health check.
NEVER_HEALTHY = 'HEALTHCHECK CMD ["python", "-c", "raise SystemExit(1)"]'
# The test database stand-in takes its password from the environment only; the
# official image also reads POSTGRES_PASSWORD_FILE, as this wrapper does.
PASSWORD_FILE_ENTRYPOINT = (
    'ENTRYPOINT ["bash", "-c", "if [ -n \\"${POSTGRES_PASSWORD_FILE:-}\\" ]; then '
    'POSTGRES_PASSWORD=$(< \\"$POSTGRES_PASSWORD_FILE\\"); export POSTGRES_PASSWORD; fi; '
    'exec docker-entrypoint.sh \\"$@\\"", "--"]\nCMD ["postgres"]'
)


def build_from(base: str, tag: str, *lines: str) -> str:
    run("docker", "build", "--quiet", "--tag", tag, "-", input="\n".join([f"FROM {base}", *lines]))
    return tag


@pytest.fixture(scope="module")
def swarm(docker_engine: None) -> Iterator[None]:
    """A one-node swarm: this engine's own if it has one, else one made for these tests
    and left afterwards, with the bridge network it adds."""
    state = run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    had_bridge = not run("docker", "network", "inspect", "docker_gwbridge", check=False).returncode
    if state == "inactive":
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    yield
    if state == "inactive":
        run("docker", "swarm", "leave", "--force")
        if not had_bridge:
            run("docker", "network", "rm", "docker_gwbridge", check=False)


class Deployment:
    def __init__(self, project: Path, name: str, repository: str, env: dict[str, str]) -> None:
        self.project, self.name, self.repository, self.env = project, name, repository, env
        self.backend = f"{name}_backend"
        self.worker = f"{name}_worker"

    def make(self, target: str, tag: str, check: bool = True) -> Any:
        variables = [f"{key}={value}" for key, value in self.env.items()]
        return run(
            "make",
            target,
            f"STACK={self.name}",
            f"IMAGE={self.repository}",
            f"TAG={tag}",
            *variables,
            cwd=self.project,
            check=check,
            timeout=600,
        )

    def running_tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        ids = run(
            *("docker", "service", "ps", service or self.backend),
            *("--quiet", "--filter", "desired-state=running"),
        ).stdout.split()
        tasks = [_task(task) for task in ids]
        return [task for task in tasks if task["Status"]["State"] == "running"]

    def wait_for_replicas(
        self, service: str | None = None, replicas: int = REPLICAS, timeout: float = 180
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self.running_tasks(service)
            if len(tasks) == replicas:
                return tasks
            time.sleep(0.5)
        pytest.fail(f"{service or self.backend}: not {replicas} running tasks after {timeout} s")

    def images(self) -> dict[str, set[str]]:
        """The images the backend's and the worker's running tasks run."""
        return {
            service: {task["Spec"]["ContainerSpec"]["Image"] for task in tasks}
            for service, tasks in (
                ("backend", self.wait_for_replicas()),
                ("worker", self.wait_for_replicas(self.worker, WORKER_REPLICAS)),
            )
        }

    def container(self, service: str) -> str:
        """The container of one of the service's running tasks."""
        task = self.running_tasks(f"{self.name}_{service}")[0]
        return str(task["Status"]["ContainerStatus"]["ContainerID"])

    @contextmanager
    def load(self) -> Iterator[dict[str, Any]]:
        """Requests without pause while the block runs; then their counts."""
        name = f"{PREFIX}-load-{uuid.uuid4().hex[:8]}"
        run(
            "docker", "run", "--detach", "--name", name, "--network", f"{self.name}_default",
            f"{self.repository}:v1", "python", "-c", LOAD,
        )  # fmt: skip
        counts: dict[str, Any] = {}
        try:
            deadline = time.monotonic() + 60
            while "first answer" not in run("docker", "logs", name).stdout:
                assert time.monotonic() < deadline, "the load got no answer within 60 s"
                time.sleep(0.2)
            yield counts
            run("docker", "stop", "--time", "30", name)
            counts.update(json.loads(run("docker", "logs", name).stdout.splitlines()[-1]))
        finally:
            run("docker", "rm", "--force", name, check=False)


def _task(task_id: str) -> dict[str, Any]:
    return json.loads(run("docker", "inspect", task_id).stdout)[0]


def stack_for_this_machine(project: Path) -> str:
    """The generated stack with DNS round robin for the backend instead of the routing
    mesh, on a network the load container can join."""
    stack = yaml.safe_load((project / "deploy/swarm/stack.yml").read_text())
    backend = stack["services"]["backend"]
    del backend["ports"]
    backend["deploy"]["endpoint_mode"] = "dnsrr"
    stack["networks"] = {"default": {"attachable": True}}
    path = project / "deploy/swarm/stack.test.yml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return str(path.relative_to(project))


@pytest.fixture(scope="module")
def deployment(
    swarm: None, images: Images, render: Renderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The variant deployed with three replicas at tag v1; v2 is the same image under
    another tag, `broken` never gets healthy (the worker's own healthcheck passes)."""
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    project = tmp_path_factory.mktemp("swarm") / "project"
    shutil.copytree(render(**VARIANT), project)
    repository = f"{name}-backend"
    release = images.get(VARIANT["database"], task_queue=VARIANT["task_queue"])
    run("docker", "tag", release, f"{repository}:v1")
    run("docker", "tag", release, f"{repository}:v2")
    build_from(release, f"{repository}:broken", NEVER_HEALTHY)
    database = build_from(
        os.environ.get("POSTGRES_IMAGE", "postgres:17"),
        f"{name}-postgres:password-file",
        PASSWORD_FILE_ENTRYPOINT,
    )
    env = {
        "REPLICAS": str(REPLICAS),
        "POSTGRES_IMAGE": database,
        "REDIS_IMAGE": os.environ.get("REDIS_IMAGE", "redis:7"),
        "SWARM_STACK": stack_for_this_machine(project),
    }
    deployed = Deployment(project, name, repository, env)
    try:
        deployed.make("swarm-deploy", "v1")
        deployed.images()
        yield deployed
    finally:
        run("docker", "stack", "rm", name, check=False)
        _wait_gone(name)
        run("docker", "volume", "rm", f"{name}_db-data", f"{name}_redis-data", check=False)
        run("docker", "network", "rm", f"{name}_default", check=False)
        tags = [f"{repository}:{tag}" for tag in ("v1", "v2", "broken")]
        run("docker", "image", "rm", "--force", *tags, database, check=False)


def _wait_gone(stack: str, timeout: float = 60) -> None:
    label = f"label=com.docker.stack.namespace={stack}"
    deadline = time.monotonic() + timeout
    while run("docker", "ps", "--all", "--quiet", "--filter", label).stdout.strip():
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)


def test_three_replicas_run_healthy(deployment):
    tasks = deployment.wait_for_replicas()
    assert len({task["Slot"] for task in tasks}) == REPLICAS
    for task in tasks:
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        assert inspect("container", container)["State"]["Health"]["Status"] == "healthy"


def test_rollout_under_load_fails_no_request_and_ends_on_the_new_tag(deployment):
    with deployment.load() as counts:
        started = time.monotonic()
        deployment.make("swarm-rollout", "v2")
        took = time.monotonic() - started
    print(f"\nrolling update of {REPLICAS} replicas: {took:.1f} s; requests: {counts}")
    assert counts["ok"] > 0
    assert counts["failed"] == 0, counts["errors"]
    new = {f"{deployment.repository}:v2"}
    assert deployment.images() == {"backend": new, "worker": new}


def test_release_that_never_gets_healthy_is_rolled_back_without_failed_requests(deployment):
    before = deployment.images()
    with deployment.load() as counts:
        deployment.make("swarm-rollout", "broken", check=False)
    print(f"\nrolled back release; requests: {counts}")
    status = inspect("service", deployment.backend)["UpdateStatus"]
    assert status["State"] == "rollback_completed"
    assert counts["failed"] == 0, counts["errors"]
    assert deployment.images() == before


def test_killed_task_is_replaced(deployment):
    victim = deployment.wait_for_replicas()[0]
    with deployment.load() as counts:
        run("docker", "kill", victim["Status"]["ContainerStatus"]["ContainerID"])
        deadline = time.monotonic() + 120
        while victim["ID"] in {task["ID"] for task in deployment.running_tasks()} or (
            len(deployment.running_tasks()) < REPLICAS
        ):
            assert time.monotonic() < deadline, "the killed task was not replaced in 120 s"
            time.sleep(0.5)
    print(
        f"\nkilled one of {REPLICAS} tasks; failed requests: {counts['failed']} of "
        f"{counts['ok'] + counts['failed']}: {counts['errors'][:3]}"
    )
    assert counts["ok"] > 0


# Run in a backend task: enqueues the example job through the API and prints the job
# once it is no longer pending.
ENQUEUE_AND_WAIT = r"""
import json, sys, time, urllib.request, uuid
api = "http://127.0.0.1:8000/api/jobs"
request = urllib.request.Request(
    api, data=json.dumps({"text": sys.argv[1]}).encode(), method="POST",
    headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
)
with urllib.request.urlopen(request, timeout=10) as response:
    job = json.load(response)
deadline = time.monotonic() + 120
while job["status"] == "pending" and time.monotonic() < deadline:
    time.sleep(0.2)
    with urllib.request.urlopen(f"{api}/{job['id']}", timeout=10) as response:
        job = json.load(response)
print(json.dumps(job))
"""


def test_worker_converges_healthy(deployment):
    tasks = deployment.wait_for_replicas(deployment.worker, WORKER_REPLICAS)
    for task in tasks:
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        assert inspect("container", container)["State"]["Health"]["Status"] == "healthy"


def test_a_job_enqueued_through_the_api_is_run_by_the_worker(deployment):
    backend = deployment.container("backend")
    job = json.loads(
        run("docker", "exec", backend, "python", "-c", ENQUEUE_AND_WAIT, "run by the worker").stdout
    )
    assert job == {"id": job["id"], "status": "succeeded", "result": 4, "error": None}
    worker_log = run("docker", "service", "logs", "--raw", deployment.worker)
    assert f"job {job['id']} started" in worker_log.stdout + worker_log.stderr


def test_the_redis_password_is_in_no_spec_environment_or_process_arguments(deployment):
    password = (deployment.project / "deploy/swarm/secrets/redis_password").read_text().strip()
    services = run("docker", "stack", "services", "--quiet", deployment.name).stdout.split()
    assert password not in run("docker", "service", "inspect", *services).stdout
    for service in ("redis", "backend", "worker"):
        container = deployment.container(service)
        assert password not in json.dumps(inspect("container", container)["Config"])
        arguments = run("docker", "top", container, "-eo", "pid,args").stdout
        assert password not in arguments, service
    # Protected: without the password, Redis answers nothing but that it needs it; with
    # it, it answers, and it keeps only its hash.
    redis = deployment.container("redis")
    assert run("docker", "exec", redis, "redis-cli", "ping").stdout.startswith("NOAUTH")
    client = ("docker", "exec", "--env", f"REDISCLI_AUTH={password}", redis, "redis-cli")
    assert run(*client, "ping").stdout.strip() == "PONG"
    assert password not in run(*client, "config", "get", "*").stdout
