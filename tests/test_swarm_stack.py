"""The Swarm stack file of every rendering: accepted by `docker stack deploy`'s loader,
holding the services its answers need, hardened as answered, and no password in any
environment value, command or healthcheck."""

from __future__ import annotations

import itertools
import re
import shutil

import pytest
import yaml
from docker_support import SERVER_DATABASES
from test_k8s import compose_production
from test_worker import DEFAULT_SHUTDOWN_WAIT, HEARTBEAT, WORKER_COMMAND, seconds

from conftest import ANSWER_MATRIX, DEFAULT_TASK_QUEUE, matrix_id, run

STACK = "deploy/swarm/stack.yml"
# A URL with a password: scheme://user:password@host
URL_WITH_PASSWORD = re.compile(r"://[^/@:]+:[^/@]+@")
# README, "Scaling out": with a database, a task starts once the schema is migrated.
WAIT_FOR_MIGRATIONS = ["python", "-m", "app.db.wait_for_migrations"]


def has_task_queue(answers) -> bool:
    return answers.get("task_queue", DEFAULT_TASK_QUEUE) != DEFAULT_TASK_QUEUE


by_answers = pytest.mark.parametrize("answers", ANSWER_MATRIX, ids=matrix_id)
by_queue_answers = pytest.mark.parametrize(
    "answers", [answers for answers in ANSWER_MATRIX if has_task_queue(answers)], ids=matrix_id
)


def stack_config(project, **env: str) -> dict:
    """The stack as `docker stack deploy` loads it: its schema, then interpolated. The
    loader runs in the client, so no engine is needed."""
    if shutil.which("docker") is None:
        pytest.skip("the docker command is not installed")
    result = run(
        "docker",
        "stack",
        "config",
        "--compose-file",
        STACK,
        cwd=project,
        env={"DOCKER_HOST": "tcp://127.0.0.1:1", **env},
    )
    return yaml.safe_load(result.stdout)


@by_answers
def test_docker_stack_deploy_accepts_the_stack(render, answers):
    stack = stack_config(render(**answers), BACKEND_TAG="1.0.0", REPLICAS="3")
    database = answers["database"]
    expected = {"backend"} | ({"migrate"} if database != "none" else set())
    expected |= {"db"} if database in SERVER_DATABASES else set()
    expected |= {"worker", "redis"} if has_task_queue(answers) else set()
    assert set(stack["services"]) == expected
    backend = stack["services"]["backend"]
    assert backend["deploy"]["replicas"] == (1 if database == "sqlite" else 3)
    update = backend["deploy"]["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert backend["deploy"]["rollback_config"]["order"] == "start-first"
    if database != "none":
        assert stack["services"]["migrate"]["deploy"]["mode"] == "replicated-job"
    hardened = answers["production_hardening"]
    assert backend.get("read_only", False) is hardened
    assert backend.get("cap_drop", []) == (["ALL"] if hardened else [])


@by_answers
def test_the_stack_needs_the_release_tag(render, answers):
    if shutil.which("docker") is None:
        pytest.skip("the docker command is not installed")
    result = run("docker", "stack", "config", "-c", STACK, cwd=render(**answers), check=False)
    assert result.returncode != 0
    assert "BACKEND_TAG" in result.stderr


@by_queue_answers
def test_the_worker_is_the_backend_with_another_command_and_time_to_finish_jobs(render, answers):
    project = render(**answers)
    services = stack_config(project, BACKEND_TAG="1.0.0")["services"]
    backend, worker = services["backend"], services["worker"]
    waits = WAIT_FOR_MIGRATIONS if answers["database"] != "none" else []
    assert worker["command"] == [*waits, *WORKER_COMMAND]
    assert worker["healthcheck"]["test"] == ["CMD", *HEARTBEAT]
    shared = ["image", "environment", "secrets", "user", "read_only", "cap_drop", "init"]
    assert {key: worker.get(key) for key in shared} == {key: backend.get(key) for key in shared}
    assert worker.get("volumes") == backend.get("volumes")
    assert seconds(worker["stop_grace_period"]) > DEFAULT_SHUTDOWN_WAIT
    deploy = worker["deploy"]
    assert deploy["replicas"] == 1
    # Where the backend's data is (SQLite's volume on the manager).
    assert deploy.get("placement") == backend["deploy"].get("placement")
    assert set(deploy["resources"]["limits"]) == {"cpus", "memory", "pids"}
    update = deploy["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert deploy["rollback_config"]["order"] == "start-first"
    scaled = stack_config(project, BACKEND_TAG="1.0.0", WORKER_REPLICAS="4")["services"]
    assert scaled["worker"]["deploy"]["replicas"] == 4


@by_queue_answers
def test_redis_reads_its_password_from_a_secret_and_keeps_its_data(render, answers):
    project = render(**answers)
    stack = stack_config(project, BACKEND_TAG="1.0.0", REDIS_IMAGE="example/redis:7")
    redis = stack["services"]["redis"]
    assert redis["image"] == "example/redis:7"
    assert [secret["source"] for secret in redis["secrets"]] == ["redis_password"]
    assert stack["secrets"]["redis_password"]["file"] == str(
        project / "deploy/swarm/secrets/redis_password"
    )
    for process in (redis["command"], redis["healthcheck"]["test"]):
        assert "/run/secrets/redis_password" in " ".join(process)
    (volume,) = redis["volumes"]
    assert (volume["type"], volume["source"], volume["target"]) == ("volume", "redis-data", "/data")
    assert "redis-data" in stack["volumes"]
    assert redis["user"] not in ("root", "0")
    hardened = answers["production_hardening"]
    assert redis.get("read_only", False) is hardened
    assert redis.get("cap_drop", []) == (["ALL"] if hardened else [])
    assert redis["deploy"]["endpoint_mode"] == "dnsrr"
    assert set(redis["deploy"]["resources"]["limits"]) == {"memory", "pids"}
    for service in ("backend", "worker"):
        environment = stack["services"][service]["environment"]
        assert environment["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"


@by_answers
def test_passwords_are_secrets_never_environment_values(render, answers):
    stack = stack_config(render(**answers), BACKEND_TAG="1.0.0")
    server = answers["database"] in SERVER_DATABASES
    assert bool(stack.get("secrets")) is (server or has_task_queue(answers))
    for name, service in stack["services"].items():
        for key, value in service.get("environment", {}).items():
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name}: {key}"
            assert not URL_WITH_PASSWORD.search(str(value)), f"{name}: {key}={value}"
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in [used["source"] for used in service["secrets"]]
                assert secret in stack["secrets"]


# One server process's PSS, rounded up (the README measures 37 MB a worker): the limit
# must hold the master and every worker.
PROCESS_MB = 40


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_the_backend_gets_a_cpu_and_memory_for_each_worker_in_compose_and_swarm(render, workers):
    project = render(workers=workers)
    compose = yaml.safe_load((project / "docker-compose.production.yml").read_text())
    stack = yaml.safe_load((project / STACK).read_text())
    resources = compose["services"]["backend"]["deploy"]["resources"]
    assert stack["services"]["backend"]["deploy"]["resources"] == resources
    limits = resources["limits"]
    # A CPU each, unless the host has fewer and BACKEND_CPUS says so.
    assert limits["cpus"] == f"${{BACKEND_CPUS:-{workers}}}"
    assert int(limits["memory"].removesuffix("M")) >= (workers + 1) * PROCESS_MB


# redis.conf's memory units: "mb" is 1024 * 1024 bytes.
REDIS_UNITS = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}


def redis_bytes(value: str) -> int:
    number = re.fullmatch(r"(\d+)(kb|mb|gb)?", value.lower())
    assert number, value
    return int(number[1]) * REDIS_UNITS.get(number[2], 1)


@by_queue_answers
def test_redis_refuses_new_jobs_well_below_its_memory_limit_in_compose_and_swarm(render, answers):
    """README: Redis stops at its maxmemory, refusing writes (noeviction), with half of
    its container's limit left for what the container holds beyond Redis' data; without
    maxmemory the kernel kills it at the limit instead."""
    project = render(**answers)
    stack = stack_config(project, BACKEND_TAG="1.0.0")["services"]["redis"]
    compose = compose_production(project)["redis"]
    swarm_command = stack["command"][-1].split("<<")[0].split()
    for command, deploy in [
        (compose["command"], compose["deploy"]),
        (swarm_command, stack["deploy"]),
    ]:
        settings = {word: value for word, value in itertools.pairwise(command) if word[:2] == "--"}
        assert settings["--maxmemory-policy"] == "noeviction"
        limit = int(deploy["resources"]["limits"]["memory"])
        assert 0 < redis_bytes(settings["--maxmemory"]) <= limit / 2
