"""Docker helpers shared by the template's Docker tests: images built once per session,
containers and compose stacks removed after each test.

Database servers come from POSTGRES_IMAGE and MARIADB_IMAGE when set (CI points them at
local stand-ins), else the compose defaults.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from conftest import DEFAULT_PYTHON, DEFAULT_TASK_QUEUE, PYTHON_VERSIONS, Renderer, run

PREFIX = "template-test"
# Throw-away credentials for the compose stacks.
DB_ENV = {
    "POSTGRES_PASSWORD": "test-password",
    "MARIADB_PASSWORD": "test-password",
    "MARIADB_ROOT_PASSWORD": "test-root-password",
    "REDIS_PASSWORD": "test-password",
}
COMPOSE_FILES = [
    "docker-compose.yml",
    "docker-compose.override.yml",
    "docker-compose.production.yml",
]
OTHER_PYTHONS = [version for version in PYTHON_VERSIONS if version != DEFAULT_PYTHON]
SERVER_DATABASES = ["postgresql", "mysql"]


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if shutil.which("docker") is None or run("docker", "info", check=False).returncode:
        pytest.skip("no Docker engine answers")


def answers(
    database: str,
    hardening: bool = True,
    python: str = DEFAULT_PYTHON,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> dict[str, Any]:
    chosen = {"python_version": python, "database": database, "production_hardening": hardening}
    # The default stays implicit, so these renderings are the answer matrix's own.
    return chosen if task_queue == DEFAULT_TASK_QUEUE else {**chosen, "task_queue": task_queue}


# Sessions of other checkouts may share the engine: each session's images get their own
# names, so one session's clean-up never removes another's (BuildKit's cache is shared).
SESSION = uuid.uuid4().hex[:8]


def image_name(
    database: str,
    hardening: bool = True,
    python: str = DEFAULT_PYTHON,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> str:
    queue = "" if task_queue == DEFAULT_TASK_QUEUE else f"-{task_queue}"
    hardened = "hardened" if hardening else "plain"
    return f"{PREFIX}-{SESSION}-{database}{queue}-{hardened}-py{python}"


def build(
    context: Path,
    tag: str,
    *,
    target: str | None = None,
    dockerfile: str = "Dockerfile",
) -> str:
    """Builds an image and returns BuildKit's plain progress output."""
    args = ["docker", "build", "--progress=plain", "-f", str(context / dockerfile), "-t", tag]
    if target:
        args += ["--target", target]
    result = run(*args, str(context), env={"DOCKER_BUILDKIT": "1"})
    return result.stderr


class Images:
    """Builds each image on first use; later requests reuse it."""

    def __init__(self, render: Renderer) -> None:
        self.render = render
        self.built: dict[str, float] = {}

    def get(
        self,
        database: str,
        hardening: bool = True,
        python: str = DEFAULT_PYTHON,
        *,
        kind: str = "production",
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> str:
        project = self.render(**answers(database, hardening, python, task_queue))
        tag = f"{image_name(database, hardening, python, task_queue)}:{kind}"
        if tag not in self.built:
            started = time.monotonic()
            if kind == "release":
                build(project / "backend", tag, dockerfile="Dockerfile.production")
            else:
                build(project / "backend", tag, target=kind)
            self.built[tag] = time.monotonic() - started
        return tag


@pytest.fixture(scope="session")
def images(docker_engine: None, render: Renderer) -> Iterator[Images]:
    built = Images(render)
    yield built
    # The images go; BuildKit's cache stays for the next session.
    if built.built:
        run("docker", "image", "rm", "--force", *built.built, check=False)


def inspect(kind: str, name: str) -> Any:
    return json.loads(run("docker", kind, "inspect", name).stdout)[0]


def http_response(
    url: str,
    method: str = "GET",
    body: Any = None,
    timeout: float = 10,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Message]:
    """The status, the JSON body (None if empty) and the headers of a JSON request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, response.headers
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None, error.headers


def http(
    url: str,
    method: str = "GET",
    body: Any = None,
    timeout: float = 10,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    status, answer, _ = http_response(url, method, body, timeout, headers)
    return status, answer


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Polls until `condition` returns something truthy, and returns it; the timeout
    only bounds a hang, it asserts nothing about speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    pytest.fail(f"not seen within {timeout} s: {what}")


def answers_200(url: str) -> bool:
    try:
        return http(url)[0] == 200
    except OSError:
        return False


def wait_for_200(url: str, timeout: float = 60) -> float:
    """Seconds until `url` first answers 200."""
    started = time.monotonic()
    wait_until(lambda: answers_200(url), f"{url} answering 200", timeout)
    return time.monotonic() - started


def wait_healthy(container: str, timeout: float = 60) -> None:
    wait_until(
        lambda: inspect("container", container)["State"]["Health"]["Status"] == "healthy",
        f"{container} healthy",
        timeout,
    )


def logs(container: str) -> str:
    result = run("docker", "logs", container)
    return result.stdout + result.stderr


def host_port(container: str) -> int:
    out = run("docker", "port", container, "8000/tcp").stdout
    return int(out.splitlines()[0].rsplit(":", 1)[1])


HARDENED_RUN = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


@pytest.fixture
def container(docker_engine: None) -> Iterator[Any]:
    """Starts containers from images and removes them, with their volumes, afterwards."""
    started: list[str] = []

    def _start(image: str, *options: str) -> str:
        name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
        run("docker", "run", "--detach", "--name", name, "-p", "127.0.0.1::8000", *options, image)
        started.append(name)
        return name

    yield _start
    for name in started:
        run("docker", "rm", "--force", "--volumes", name, check=False)


class Stack:
    def __init__(self, project: Path, name: str, env: dict[str, str]) -> None:
        self.project, self.name, self.env = project, name, env
        self.files = ["-f", "docker-compose.yml", "-f", "docker-compose.production.yml"]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            "docker",
            "compose",
            "-p",
            self.name,
            *self.files,
            *args,
            cwd=self.project,
            env=self.env,
            check=check,
        )

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service).stdout.strip()


def remains(project_name: str) -> list[str]:
    label = f"label=com.docker.compose.project={project_name}"
    return [
        line
        for kind in (["ps", "--all"], ["volume", "ls"], ["network", "ls"])
        for line in run("docker", *kind, "--quiet", "--filter", label).stdout.split()
    ]


@contextmanager
def compose_stack(
    images: Images,
    render: Renderer,
    database: str,
    hardening: bool,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> Iterator[Stack]:
    """A production stack of the rendered project, up and healthy; removed afterwards."""
    image = images.get(database, hardening, task_queue=task_queue)
    repository, tag = image.rsplit(":", 1)
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    env = {
        **DB_ENV,
        "BACKEND_IMAGE": repository,
        "BACKEND_TAG": tag,
        "BACKEND_PORT": "0",
    }
    started = Stack(render(**answers(database, hardening, task_queue=task_queue)), name, env)
    try:
        started.compose("up", "--detach", "--wait", "--wait-timeout", "180", "--no-build")
        yield started
    finally:
        started.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture
def stack(images: Images, render: Renderer) -> Iterator[Any]:
    with ExitStack() as stacks:
        yield lambda database, hardening: stacks.enter_context(
            compose_stack(images, render, database, hardening)
        )
