"""The rendered project's containers, built and run on a real Docker engine.

Every image is built once per session and shared by the tests that need it; BuildKit's
cache is kept between sessions. Database servers come from POSTGRES_IMAGE and
MARIADB_IMAGE when set (CI points them at local stand-ins), else the compose defaults.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DATABASES, DEFAULT_PYTHON, HARDENING, PYTHON_VERSIONS, Renderer, run

pytestmark = pytest.mark.docker

PREFIX = "template-test"
# Throw-away credentials for the compose stacks.
DB_ENV = {
    "POSTGRES_PASSWORD": "test-password",
    "MARIADB_PASSWORD": "test-password",
    "MARIADB_ROOT_PASSWORD": "test-root-password",
}
COMPOSE_FILES = [
    "docker-compose.yml",
    "docker-compose.override.yml",
    "docker-compose.production.yml",
]
OTHER_PYTHONS = [version for version in PYTHON_VERSIONS if version != DEFAULT_PYTHON]
SERVER_DATABASES = ["postgresql", "mysql"]


@pytest.fixture(scope="session", autouse=True)
def _engine() -> None:
    if shutil.which("docker") is None or run("docker", "info", check=False).returncode:
        pytest.skip("no Docker engine answers")


def answers(database: str, hardening: bool = True, python: str = DEFAULT_PYTHON) -> dict[str, Any]:
    return {"python_version": python, "database": database, "production_hardening": hardening}


def image_name(database: str, hardening: bool = True, python: str = DEFAULT_PYTHON) -> str:
    return f"{PREFIX}-{database}-{'hardened' if hardening else 'plain'}-py{python}"


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
    ) -> str:
        project = self.render(**answers(database, hardening, python))
        tag = f"{image_name(database, hardening, python)}:{kind}"
        if tag not in self.built:
            started = time.monotonic()
            if kind == "release":
                build(project / "backend", tag, dockerfile="Dockerfile.production")
            else:
                build(project / "backend", tag, target=kind)
            self.built[tag] = time.monotonic() - started
        return tag


@pytest.fixture(scope="session")
def images(render: Renderer) -> Iterator[Images]:
    built = Images(render)
    yield built
    # The images go; BuildKit's cache stays for the next session.
    if built.built:
        run("docker", "image", "rm", "--force", *built.built, check=False)


def inspect(kind: str, name: str) -> Any:
    return json.loads(run("docker", kind, "inspect", name).stdout)[0]


def http(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def wait_for_200(url: str, timeout: float = 60) -> float:
    """Seconds until `url` first answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if http(url)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer 200 within {timeout} s")


def wait_healthy(container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = inspect("container", container)["State"]["Health"]["Status"]
        if status == "healthy":
            return
        time.sleep(0.5)
    pytest.fail(f"{container} not healthy after {timeout} s")


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
def container() -> Iterator[Any]:
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


# --- Static checks of the rendered files -------------------------------------------


@pytest.mark.parametrize("hardening", HARDENING)
@pytest.mark.parametrize("database", DATABASES)
def test_compose_files_are_valid(render: Renderer, database: str, hardening: bool) -> None:
    project = render(**answers(database, hardening))
    env = DB_ENV
    for count in range(1, len(COMPOSE_FILES) + 1):
        for files in itertools.combinations(COMPOSE_FILES[1:], count - 1):
            options = [arg for name in ("docker-compose.yml", *files) for arg in ("-f", name)]
            run("docker", "compose", *options, "config", "--quiet", cwd=project, env=env)


# --- Images ----------------------------------------------------------------------


@pytest.mark.parametrize("hardening", HARDENING)
@pytest.mark.parametrize("database", DATABASES)
def test_production_image_serves_as_non_root(
    images: Images, container: Any, database: str, hardening: bool
) -> None:
    image = images.get(database, hardening)
    config = inspect("image", image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "python", "-I"]
    options = [*HARDENED_RUN] if hardening else []
    if database == "sqlite":
        options += ["--mount", "type=volume,target=/app/data"]
    name = container(image, *options)
    url = f"http://127.0.0.1:{host_port(name)}"
    seconds = wait_for_200(f"{url}/health")
    print(f"{image}: first 200 on /health {seconds:.2f} s after start")
    status, body = http(f"{url}/ready")
    if database in SERVER_DATABASES:  # no database server runs alongside
        assert (status, body["status"]) == (503, "unavailable")
    else:
        assert status == 200
    assert run("docker", "exec", name, "id", "-u").stdout.strip() == "10001"
    wait_healthy(name)


@pytest.mark.parametrize("database", DATABASES)
def test_production_image_holds_only_the_runtime(images: Images, database: str) -> None:
    image = images.get(database)
    script = (
        "for tool in gcc cc strip pip pip3 uv; do command -v $tool; done;"
        " python -c 'import pip' 2>/dev/null && echo pip-module;"
        " ls -d /app/tests /app/requirements*.txt /app/pyproject.toml /app/.*cache 2>/dev/null;"
        " find / -xdev -name 'requirements*.txt' -print;"
        " true"
    )
    found = run("docker", "run", "--rm", "--entrypoint", "sh", image, "-c", script).stdout
    assert found.split() == []


@pytest.mark.parametrize("database", DATABASES)
def test_development_image_has_the_tools(images: Images, database: str) -> None:
    image = images.get(database, kind="development")
    config = inspect("image", image)["Config"]
    assert "--reload" in config["Cmd"]
    run(
        "docker",
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "ruff --version && mypy --version && pytest --version && uv --version",
    )


@pytest.mark.parametrize("database", DATABASES)
def test_release_image_is_checked_and_hardened(
    images: Images, container: Any, database: str
) -> None:
    image = images.get(database, kind="release")
    setuid = run(
        "docker",
        "run",
        "--rm",
        "--user",
        "0",
        "--entrypoint",
        "find",
        image,
        "/",
        "-xdev",
        "-perm",
        "/6000",
        "-type",
        "f",
    )
    assert setuid.stdout.split() == []
    options = (
        [*HARDENED_RUN, "--mount", "type=volume,target=/app/data"]
        if database == "sqlite"
        else HARDENED_RUN
    )
    name = container(image, *options)
    wait_for_200(f"http://127.0.0.1:{host_port(name)}/health")
    assert run("docker", "exec", name, "id", "-u").stdout.strip() == "10001"


@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_production_image_on_each_python(images: Images, container: Any, python: str) -> None:
    image = images.get("postgresql", python=python)
    name = container(image, *HARDENED_RUN)
    wait_for_200(f"http://127.0.0.1:{host_port(name)}/health")
    version = run("docker", "exec", name, "python", "-c", "import sys; print(sys.version)").stdout
    assert version.startswith(python + ".")


def test_code_change_rebuilds_only_the_app(
    images: Images, render: Renderer, tmp_path: Path
) -> None:
    images.get("postgresql")  # warms the cache this rebuild must reuse
    project = tmp_path / "project"
    shutil.copytree(render(**answers("postgresql")), project)
    main = project / "backend" / "app" / "main.py"
    # A change never made before, so no earlier build can have cached it.
    main.write_text(main.read_text() + f"\n# change {uuid.uuid4().hex}\n")
    tag = f"{PREFIX}-rebuild:{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    output = build(project / "backend", tag, target="production")
    print(f"rebuild after a code-only change: {time.monotonic() - started:.1f} s")
    run("docker", "image", "rm", tag)
    steps: dict[str, str] = {}
    cached: set[str] = set()
    for line in output.splitlines():
        number, _, rest = line.partition(" ")
        if rest.startswith("[") and "]" in rest:
            steps.setdefault(number, rest)
        elif rest == "CACHED":
            cached.add(number)
    dependency_steps = {
        number: step
        for number, step in steps.items()
        if (step.startswith(("[build ", "[venv ", "[production 2/")) or "--from=venv" in step)
        and " FROM " not in step
    }
    assert len(dependency_steps) >= 4, steps
    assert {n: s for n, s in dependency_steps.items() if n not in cached} == {}
    assert any("COPY --link app" in step and n not in cached for n, step in steps.items())


@pytest.mark.parametrize("database", DATABASES)
def test_generated_suite_passes_in_the_development_container(
    render: Renderer, tmp_path: Path, database: str
) -> None:
    """`make test` as a team runs it: the default Python, the compose database."""
    project = tmp_path / "project"
    shutil.copytree(render(**answers(database)), project)
    shutil.copy(project / ".env.example", project / ".env")
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    # Renderings share a slug, hence an image name: each gets its own development image.
    env = {"COMPOSE_PROJECT_NAME": name, "BACKEND_IMAGE": name}
    try:
        output = run("make", "test", cwd=project, env=env).stdout
    finally:
        run("docker", "compose", "down", "--volumes", "--remove-orphans", cwd=project, env=env)
        run("docker", "image", "rm", "--force", f"{name}:dev", check=False)
    assert re.search(r"\d+ passed", output), output[-2000:]
    assert "Required test coverage of 90" in output
    assert remains(env["COMPOSE_PROJECT_NAME"]) == []


# --- The compose stack -----------------------------------------------------------


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


@pytest.fixture
def stack(images: Images, render: Renderer) -> Iterator[Any]:
    stacks: list[Stack] = []

    def _up(database: str, hardening: bool) -> Stack:
        image = images.get(database, hardening)
        repository, tag = image.rsplit(":", 1)
        name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
        env = {
            **DB_ENV,
            "BACKEND_IMAGE": repository,
            "BACKEND_TAG": tag,
            "BACKEND_PORT": "0",
        }
        started = Stack(render(**answers(database, hardening)), name, env)
        stacks.append(started)
        started.compose("up", "--detach", "--wait", "--wait-timeout", "180", "--no-build")
        return started

    yield _up
    for started in stacks:
        started.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def slow_request_survives_stop(stack: Stack, port: int) -> None:
    """A request still receiving its body when `docker stop` arrives is answered."""
    body = json.dumps({"name": "in-flight"}).encode()
    conn = socket.create_connection(("127.0.0.1", port), timeout=15)
    conn.sendall(
        b"POST /api/items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    time.sleep(0.5)
    container = stack.container("backend")
    stopped: dict[str, float] = {}

    def stop() -> None:
        started = time.monotonic()
        run("docker", "stop", container)
        stopped["seconds"] = time.monotonic() - started

    stopper = threading.Thread(target=stop)
    stopper.start()
    time.sleep(1.5)
    conn.sendall(body[5:])
    response = b""
    while chunk := conn.recv(65536):
        response += chunk
        if b"\r\n\r\n" in response and response.rstrip().endswith(b"}"):
            break
    conn.close()
    stopper.join(timeout=30)
    assert response.startswith(b"HTTP/1.1 201"), response
    assert stopped["seconds"] < 10
    assert inspect("container", container)["State"]["ExitCode"] == 0


@pytest.mark.parametrize("hardening", HARDENING)
@pytest.mark.parametrize("database", DATABASES)
def test_production_stack(stack: Any, database: str, hardening: bool) -> None:
    up: Stack = stack(database, hardening)
    backend = up.container("backend")
    port = int(up.compose("port", "backend", "8000").stdout.strip().rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}"
    assert http(f"{url}/health") == (200, {"status": "ok"})
    assert http(f"{url}/ready")[0] == 200

    host = inspect("container", backend)["HostConfig"]
    assert inspect("container", backend)["Config"]["User"] == "10001:10001"
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert host["Memory"] > 0
    assert host["PidsLimit"] > 0
    # Neither source code nor the Docker socket is mounted: named volumes only.
    assert {mount["Type"] for mount in inspect("container", backend)["Mounts"]} <= {"volume"}
    status = run("docker", "exec", backend, "cat", "/proc/1/status").stdout
    cap_eff = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    if hardening:
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Init"] is True
        assert int(cap_eff, 16) == 0
        assert http(f"{url}/docs")[0] == 404
    else:
        assert host["ReadonlyRootfs"] is False

    if database != "none":
        migrate = inspect("container", up.container("migrate"))["State"]
        assert (migrate["Status"], migrate["ExitCode"]) == ("exited", 0)
        status_code, item = http(f"{url}/api/items", "POST", {"name": "widget"})
        assert status_code == 201, item
        status_code, fetched = http(f"{url}/api/items/{item['id']}")
        assert (status_code, fetched["name"]) == (200, "widget")
        status_code, patched = http(f"{url}/api/items/{item['id']}", "PATCH", {"name": "gadget"})
        assert (status_code, patched["name"]) == (200, "gadget")
        assert http(f"{url}/api/items/{item['id']}", "DELETE")[0] == 204
        assert http(f"{url}/api/items/{item['id']}")[0] == 404
        slow_request_survives_stop(up, port)

    up.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
    assert remains(up.name) == []
