"""The rendered project's containers, built and run on a real Docker engine.

Every image is built once per session and shared by the tests that need it; BuildKit's
cache is kept between sessions.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import select
import shutil
import socket
import struct
import threading
import time
import uuid
from http.client import HTTPConnection
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
    logs,
    remains,
    wait_for_200,
    wait_healthy,
    wait_until,
)

from conftest import (
    DATABASES,
    DEFAULT_TASK_QUEUE,
    HARDENING,
    ONE_OFF_SERVICES,
    Renderer,
    default,
    run,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

# README: "security headers are always sent"; HSTS only in hardened production.
SECURITY_HEADERS = {
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
    "cross-origin-opener-policy",
    "permissions-policy",
}


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of one GET, redirects not followed."""
    connection = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def assert_served_as_answered(port: int, hardening: bool) -> None:
    """No server header, the security headers, and HSTS and docs as the answer says."""
    headers = get(port, "/health")[1]
    assert "server" not in headers
    assert set(headers) >= SECURITY_HEADERS
    assert ("strict-transport-security" in headers) is hardening
    assert get(port, "/docs")[0] == (404 if hardening else 200)


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


# What a team puts in .env to run the stacks on servers of its own, at another level.
OWN_SETTINGS = {
    "LOG_LEVEL": "WARNING",
    "ENVIRONMENT": "test",
    "DATABASE_URL": "postgresql+asyncpg://team@db.example.com/team",
    "REDIS_URL": "redis://:team@redis.example.com:6379/0",
}
STACKS = {"development": COMPOSE_FILES[:2], "production": COMPOSE_FILES[::2]}


def backend_environment(project: Path, stack: str) -> dict[str, str]:
    options = [arg for name in STACKS[stack] for arg in ("-f", name)]
    config = run("docker", "compose", *options, "config", "--format", "json", cwd=project)
    return json.loads(config.stdout)["services"]["backend"]["environment"]


@pytest.mark.parametrize(
    ("database", "task_queue"),
    [*itertools.product(DATABASES, [DEFAULT_TASK_QUEUE]), ("sqlite", "taskiq")],
)
def test_env_file_settings_reach_the_backend(
    render: Renderer, tmp_path: Path, database: str, task_queue: str
) -> None:
    """`.env` wins over what the compose files set, ENVIRONMENT aside (each stack's
    own); the example file as copied keeps the development stack's debug logs."""
    project = tmp_path / "project"
    shutil.copytree(render(**answers(database, task_queue=task_queue)), project)
    secrets = "".join(f"{key}={value}\n" for key, value in DB_ENV.items())
    env_file = project / ".env"
    env_file.write_text((project / ".env.example").read_text() + secrets)
    assert backend_environment(project, "development")["LOG_LEVEL"] == "DEBUG"
    env_file.write_text(
        secrets + "".join(f"{key}={value}\n" for key, value in OWN_SETTINGS.items())
    )
    for stack in STACKS:
        environment = backend_environment(project, stack)
        own = {key: environment.get(key) for key in OWN_SETTINGS}
        assert own == OWN_SETTINGS | {"ENVIRONMENT": stack}


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
    port = host_port(name)
    url = f"http://127.0.0.1:{port}"
    seconds = wait_for_200(f"{url}/health")
    print(f"{image}: first 200 on /health {seconds:.2f} s after start")
    assert_served_as_answered(port, hardening)
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


# One worker: fewer processes writing into the same log at once.
VERBOSE_IMPORTS = ["--env", "PYTHONVERBOSE=1", "--env", "WEB_CONCURRENCY=1"]


# Runs inside the image: every ELF file under the given directory without a symbol table
# or debug sections (`strip --strip-unneeded` removes both).
UNSTRIPPED = r"""
import struct, sys
from pathlib import Path

def sections(data):
    offset, = struct.unpack_from("<Q", data, 0x28)
    size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, offset + i * size) for i in range(count)]
    names_at = headers[names_index][4]
    for header in headers:
        start = names_at + header[0]
        yield data[start:data.index(b"\0", start)].decode()

found = 0
for path in Path(sys.argv[1]).rglob("*.so*"):
    data = path.read_bytes()
    if data[:4] == b"\x7fELF":
        found += 1
        if any(n == ".symtab" or n.startswith(".debug") for n in sections(data)):
            print(path)
print(f"{found} shared objects", file=sys.stderr)
"""


@pytest.mark.parametrize("database", DATABASES)
def test_production_image_has_stripped_extensions_and_compiles_nothing_at_start(
    images: Images, container: Any, database: str
) -> None:
    image = images.get(database)
    unstripped = run(
        "docker", "run", "--rm", "--entrypoint", "python", image, "-c", UNSTRIPPED, "/opt/venv"
    )
    assert unstripped.stdout.split() == []
    assert int(unstripped.stderr.split()[0]) > 0, unstripped.stderr
    options = ["--mount", "type=volume,target=/app/data"] if database == "sqlite" else []
    name = container(image, *HARDENED_RUN, *options, *VERBOSE_IMPORTS)
    wait_for_200(f"http://127.0.0.1:{host_port(name)}/health")
    assert_nothing_compiled_at_start(name)


def assert_nothing_compiled_at_start(container: str) -> None:
    """Started with PYTHONVERBOSE=1, the server named the file each module's code came
    from: a `.py` file means it was compiled at start (app, venv or standard library)."""
    # Several processes share the log, so a message may run into the next one.
    loaded = re.findall(r"# code object from '?([^'\s]+)", logs(container))
    assert any("/app/app/" in path for path in loaded)
    assert [path for path in loaded if not path.endswith(".pyc")] == []


def worker_count(container: str) -> int:
    """gunicorn processes whose parent is a gunicorn process: the workers."""
    table = run(
        "docker", "exec", container, "sh", "-c",
        'for p in /proc/[0-9]*; do echo "${p#/proc/} $(cut -d" " -f4 $p/stat)'
        ' $(tr "\\0" " " < $p/cmdline)"; done',
    ).stdout  # fmt: skip
    gunicorn = {
        pid: parent
        for pid, parent, *command in (line.split(" ", 2) for line in table.splitlines())
        if "bin/gunicorn" in " ".join(command)
    }
    return sum(parent in gunicorn for parent in gunicorn.values())


INSIDE_REDIRECT = (
    "import urllib.request as u\n"
    "class Stop(u.HTTPRedirectHandler):\n"
    "    def redirect_request(self, *args): return None\n"
    "try:\n"
    "    u.build_opener(Stop).open(u.Request('http://127.0.0.1:8000/health/',"
    " headers={'X-Forwarded-Proto': 'https'}))\n"
    "except u.HTTPError as redirect:\n"
    "    print(redirect.headers['location'])\n"
)


@pytest.mark.parametrize(
    ("environment", "workers", "trusted_from_host"),
    [
        ({}, default("workers"), False),
        ({"WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "*"}, 3, True),
    ],
    ids=["answers", "environment-overrides"],
)
def test_workers_and_trusted_proxies_follow_the_answer_and_the_environment(
    images: Images,
    container: Any,
    environment: dict[str, str],
    workers: int,
    trusted_from_host: bool,
) -> None:
    image = images.get("none")
    options = [arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")]
    name = container(image, *HARDENED_RUN, *options)
    wait_until(
        lambda: logs(name).count("Application startup complete.") >= workers,
        f"{workers} workers started",
    )
    assert worker_count(name) == workers
    # A redirect's scheme follows X-Forwarded-Proto only from a trusted proxy.
    inside = run("docker", "exec", name, "python", "-c", INSIDE_REDIRECT).stdout.strip()
    assert inside.startswith("https://"), inside
    status, headers = get(host_port(name), "/health/", {"X-Forwarded-Proto": "https"})
    assert status == 307
    assert headers["location"].startswith("https://" if trusted_from_host else "http://")


# A red tree: each breaks one of Dockerfile.production's gates, which must name it.
RED_TREES = {
    "lint": ("app/unused_import.py", '"""Red."""\n\nimport os\n', "F401"),
    "types": (
        "app/wrong_type.py",
        '"""Red."""\n\n\ndef red() -> int:\n    return "red"\n',
        "Incompatible return value type",
    ),
    "tests": (
        "tests/test_red.py",
        '"""Red."""\n\n\ndef test_red() -> None:\n    assert sum([1, 1]) == 3\n',
        "FAILED tests/test_red.py::test_red",
    ),
}


@pytest.mark.parametrize("gate", RED_TREES)
def test_release_build_refuses_a_red_tree(
    images: Images, render: Renderer, tmp_path: Path, gate: str
) -> None:
    images.get("none", kind="release")  # a green tree builds; its cache serves this one
    project = tmp_path / "project"
    shutil.copytree(render(**answers("none")), project)
    path, text, message = RED_TREES[gate]
    (project / "backend" / path).write_text(text)
    tag = f"{PREFIX}-red:{uuid.uuid4().hex[:8]}"
    args = ["docker", "build", "--progress=plain", "-f", "Dockerfile.production", "-t", tag, "."]
    result = run(*args, cwd=project / "backend", check=False, env={"DOCKER_BUILDKIT": "1"})
    assert result.returncode != 0, f"{gate}: the red tree was built into an image"
    assert message in result.stderr, result.stderr[-3000:]


# Secrets and local state a developer may leave in backend/; .dockerignore keeps them out.
PLANTED = [
    ".env",
    ".env.production",
    "app/.env",
    "data/app.db",
    "local.db",
    "app/cache.db",
    "dump.sqlite3",
    ".venv/secret",
]


def test_secrets_and_local_state_stay_out_of_the_images(
    images: Images, render: Renderer, tmp_path: Path
) -> None:
    images.get("sqlite", kind="development")  # warms the cache
    project = tmp_path / "project"
    shutil.copytree(render(**answers("sqlite")), project)
    backend = project / "backend"
    for relative in PLANTED:
        (backend / relative).parent.mkdir(parents=True, exist_ok=True)
        (backend / relative).write_text("SECRET=planted\n")
    tag = f"{PREFIX}-context:{uuid.uuid4().hex[:8]}"
    try:
        build(backend, tag, target="development")  # the target that copies the whole context
        script = "grep -rls SECRET=planted /app; ls /app/tests >/dev/null && echo tests-present"
        found = run("docker", "run", "--rm", tag, "sh", "-c", script, check=False).stdout
    finally:
        run("docker", "image", "rm", "--force", tag, check=False)
    assert found.split() == ["tests-present"]


@pytest.mark.parametrize("database", DATABASES)
def test_development_image_has_the_tools_and_runs_as_uid_10001(
    images: Images, database: str
) -> None:
    image = images.get(database, kind="development")
    config = inspect("image", image)["Config"]
    assert "--reload" in config["Cmd"]
    assert config["User"] == "10001:10001"
    script = "id -u && ruff --version && mypy --version && pytest --version && uv --version"
    output = run("docker", "run", "--rm", image, "sh", "-c", script).stdout
    assert output.splitlines()[0] == "10001"


LIBC = ctypes.CDLL(None, use_errno=True)
IN_OPEN = 0x20
INOTIFY_EVENT = struct.Struct("iIII")  # watch, mask, cookie, length of the name after it


class DirectoryOpens:
    """Counts, through inotify, how often a directory is opened: listed, as a reloader
    that polls the files under it lists it on each round."""

    def __init__(self, directory: Path) -> None:
        self.fd = LIBC.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or LIBC.inotify_add_watch(self.fd, os.fsencode(directory), IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {directory}")

    def wait(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while count > 0:
            ready, _, _ = select.select([self.fd], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"{count} more openings not seen within {timeout} s")
            data = os.read(self.fd, 4096)
            offset = 0
            while offset < len(data):
                _, mask, _, length = INOTIFY_EVENT.unpack_from(data, offset)
                count -= bool(mask & IN_OPEN)
                offset += INOTIFY_EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


def test_development_server_reloads_on_a_change_of_the_app_only(
    images: Images, container: Any, render: Renderer, tmp_path: Path
) -> None:
    """The source mounted as compose mounts it, with a virtual environment in backend/
    as a developer's tools put it there: the reloader restarts the server on a change of
    the app's code, never of that environment."""
    image = images.get("none", kind="development")
    backend = tmp_path / "project" / "backend"
    shutil.copytree(render(**answers("none")) / "backend", backend)
    installed = backend / ".venv" / "lib" / "site-packages" / "installed" / "__init__.py"
    installed.parent.mkdir(parents=True)
    installed.write_text('"""An installed package."""\n')
    # Imported by nothing: only the reloader lists it, once a round.
    probe = backend / "app" / "probe"
    probe.mkdir()
    name = container(image, "--mount", f"type=bind,source={backend},target=/app")
    wait_for_200(f"http://127.0.0.1:{host_port(name)}/health")
    opens = DirectoryOpens(probe)
    try:
        installed.write_text('"""An installed package, upgraded."""\n')
        # The second listing after the change is in a round that began after it, the
        # third in the next: by then a whole round has looked at the files since.
        opens.wait(3)
    finally:
        opens.close()
    main = backend / "app" / "main.py"
    main.write_text(main.read_text() + "\n# changed\n")
    wait_until(
        lambda: "StatReload detected changes in 'app/main.py'. Reloading..." in logs(name),
        "the reload after the app's change",
    )
    wait_until(lambda: logs(name).count("Application startup complete.") == 2, "the app reloaded")
    assert ".venv" not in logs(name)


# Each database without jobs, and with them the rendering whose gate leaves out the tests
# of both servers (the worker's tests have built its runtime stages already).
RELEASE_RENDERINGS = [
    *(pytest.param(database, DEFAULT_TASK_QUEUE, id=database) for database in DATABASES),
    pytest.param("postgresql", "taskiq", id="postgresql-taskiq"),
]


@pytest.mark.parametrize(("database", "task_queue"), RELEASE_RENDERINGS)
def test_release_image_is_checked_and_hardened(
    images: Images, container: Any, database: str, task_queue: str
) -> None:
    image = images.get(database, kind="release", task_queue=task_queue)
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
    # With the host check a deployment sets: Docker's healthcheck and a probe by address
    # (Host 127.0.0.1) pass it, a request to the API by address does not.
    name = container(image, *options, "--env", "ALLOWED_HOSTS=api.example.com")
    wait_healthy(name)
    port = host_port(name)
    assert get(port, "/health")[0] == 200
    assert get(port, "/api/anything")[0] == 400
    assert get(port, "/api/anything", {"Host": "api.example.com"})[0] == 404
    assert run("docker", "exec", name, "id", "-u").stdout.strip() == "10001"


@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_production_image_on_each_python(images: Images, container: Any, python: str) -> None:
    image = images.get("postgresql", python=python)
    name = container(image, *HARDENED_RUN, *VERBOSE_IMPORTS)
    wait_for_200(f"http://127.0.0.1:{host_port(name)}/health")
    # The official images ship no standard-library bytecode (nor do the stand-ins here,
    # but for the Debian-built 3.14 and 3.15): the image must bring its own.
    assert_nothing_compiled_at_start(name)
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


# A developer's uid on a typical Linux machine: neither root nor the images' 10001.
DEVELOPER = 1000


def as_a_developer(backend: Path) -> list[str]:
    """Make variables that run the Makefile's commands as DEVELOPER, who owns the
    checkout; when the tests run as another user than root, as that user."""
    if os.getuid() != 0:
        return []
    for path in [backend, *backend.rglob("*")]:
        os.chown(path, DEVELOPER, DEVELOPER, follow_symlinks=False)
    return [f"AS_YOU=--user {DEVELOPER}:{DEVELOPER}"]


@pytest.mark.parametrize("database", DATABASES)
def test_generated_suite_passes_in_the_development_container(
    render: Renderer, tmp_path: Path, database: str
) -> None:
    """`make test` as a developer runs it: the default Python, the compose database,
    their own uid; then `make revision` writes a migration into their checkout."""
    project = tmp_path / "project"
    shutil.copytree(render(**answers(database)), project)
    shutil.copy(project / ".env.example", project / ".env")
    developer = as_a_developer(project / "backend")
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    # Renderings share a slug, hence an image name: each gets its own development image.
    env = {"COMPOSE_PROJECT_NAME": name, "BACKEND_IMAGE": name}
    versions = project / "backend" / "migrations" / "versions"
    try:
        output = run("make", "test", *developer, cwd=project, env=env).stdout
        if database != "none":
            before = set(versions.glob("*.py"))
            run("make", "revision", "m=nothing changed", *developer, cwd=project, env=env)
            (revision,) = set(versions.glob("*.py")) - before
    finally:
        run("docker", "compose", "down", "--volumes", "--remove-orphans", cwd=project, env=env)
        run("docker", "image", "rm", "--force", f"{name}:dev", check=False)
    assert re.search(r"\d+ passed", output), output[-2000:]
    assert "Required test coverage of 90" in output
    if database != "none":
        assert "nothing changed" in revision.read_text()
        assert revision.stat().st_uid == (project / "backend").stat().st_uid
    assert remains(env["COMPOSE_PROJECT_NAME"]) == []


# --- The compose stack -----------------------------------------------------------


def received_and_read(container: str, client_port: int) -> bool:
    """The container's end of our connection is established and its receive queue is
    empty: the server has read everything sent so far."""
    table = run("docker", "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 4 and fields[2].endswith(f":{client_port:04X}") and fields[3] == "01":
            return fields[4].endswith(":00000000")
    return False


def stop_in_background(container: str) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    stopper = threading.Thread(target=lambda: results.append(run("docker", "stop", container)))
    stopper.start()
    return stopper, results


def graceful_stop_answers_the_request_in_flight(stack: Stack) -> None:
    """`docker stop` during a request still receiving its body: the request is answered,
    then the container exits cleanly (not killed at the end of the grace period)."""
    container = stack.container("backend")
    address = next(iter(inspect("container", container)["NetworkSettings"]["Networks"].values()))[
        "IPAddress"
    ]
    body = json.dumps({"name": "in-flight"}).encode()
    # Straight to the container, so its socket table shows our connection's state.
    conn = socket.create_connection((address, 8000), timeout=30)
    conn.sendall(
        b"POST /api/items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    client_port = conn.getsockname()[1]
    wait_until(lambda: received_and_read(container, client_port), "the partial request read")
    stopper, results = stop_in_background(container)
    wait_until(lambda: "Handling signal: term" in logs(container), "gunicorn got SIGTERM")
    conn.sendall(body[5:])
    response = b""
    while chunk := conn.recv(65536):
        response += chunk
        if b"\r\n\r\n" in response and response.rstrip().endswith(b"}"):
            break
    conn.close()
    stopper.join()
    assert results, "docker stop did not complete"
    assert response.startswith(b"HTTP/1.1 201"), response
    assert inspect("container", container)["State"]["ExitCode"] == 0


def graceful_stop_when_idle(stack: Stack) -> None:
    """Without requests (and without a database) the server shuts down cleanly."""
    container = stack.container("backend")
    run("docker", "stop", container)
    assert "Shutting down: Master" in logs(container)
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
    # Docker's own policy, as `docker compose` sets it: restarts after a clean exit (the
    # daemon or host restarting) and without a retry limit; none for a migration.
    for service in up.compose("config", "--services").stdout.split():
        policy = inspect("container", up.container(service))["HostConfig"]["RestartPolicy"]
        expected = "no" if service in ONE_OFF_SERVICES else "unless-stopped"
        assert policy == {"Name": expected, "MaximumRetryCount": 0}, service
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
    else:
        assert host["ReadonlyRootfs"] is False
    assert_served_as_answered(port, hardening)

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
        graceful_stop_answers_the_request_in_flight(up)
    else:
        graceful_stop_when_idle(up)

    up.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
    assert remains(up.name) == []
