"""The rendered project's containers, built and run on a real Docker engine.

Every image is built once per session and shared by the tests that need it; BuildKit's
cache is kept between sessions.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from docker_support import (
    COMPOSE_FILES,
    DB_ENV,
    HARDENED_RUN,
    OTHER_PYTHONS,
    PREFIX,
    SERVER_DATABASES,
    Images,
    Stack,
    answers,
    build,
    host_port,
    http,
    inspect,
    remains,
    wait_for_200,
    wait_healthy,
)

from conftest import DATABASES, HARDENING, Renderer, run

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


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
