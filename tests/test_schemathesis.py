"""The generated service, running as production runs it (gunicorn, forked uvicorn
workers, production settings), against hostile clients, for every database:

- schemathesis with every phase and a fixed seed finds no server error and no failed
  check (every check on, none disabled);
- raw requests beyond each limit get their JSON refusal and leave the worker serving;
- an item stored before all of this comes out unchanged.

The development server (uvicorn --reload, as the development image runs it) is held
to the same limits and sends no `server` header either.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ADMIN_SQL, DATABASES, run

pytestmark = pytest.mark.slow

SEED = 42
PHASES = "examples,coverage,fuzzing,stateful"
# Fuzzers try small ids and the bounds of the id range first: the kept item sits where
# none of them looks, so a valid DELETE of some item cannot remove it.
KEPT_ID = 1_234_567_891
KEPT = {"name": "kept-before-hostile", "description": "written before any of it"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@contextmanager
def serving(
    command: list[str], cwd: Path, env: dict[str, str], port: int
) -> Iterator[tuple[str, int]]:
    """Runs the server until /health answers, with no `server` header; yields its URL
    and process id, then stops it and fails if it logged an unhandled error."""
    log = cwd / f"server-{port}.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                code, headers, _ = get(f"{url}/health")
                if code == 200:
                    assert "server" not in {name.lower() for name in headers}
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        yield url, server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    logged = log.read_text()
    assert "unhandled error" not in logged, logged[-5000:]
    assert "Traceback" not in logged, logged[-5000:]


def send_raw(port: int, head: bytes, piece: bytes, repeat: int) -> tuple[bytes, float]:
    """Sends a head, then `piece` `repeat` times while reading; returns the status
    line and the seconds to its first byte."""
    body_size = len(piece) * repeat
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(head)
        client.setblocking(False)
        received, first = b"", 0.0
        sent = 0
        while b"\r\n" not in received:
            if sent < body_size:
                try:
                    sent += client.send(piece[sent % len(piece) :])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent = body_size
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                if sent >= body_size:
                    time.sleep(0.001)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            first = first or time.perf_counter() - started
            received += chunk
    return received.split(b"\r\n", 1)[0], first


def rss_mb(pid: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", status)
    assert found, status
    return int(found.group(1)) / 1024


def worker_rss_mb(server: int) -> float:
    """The resident memory of the server's worker: its largest child process (the
    reloader also starts a small resource tracker)."""
    return max(map(rss_mb, run("pgrep", "-P", str(server)).stdout.split()))


KB64 = b"a" * 65536
HEADER = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
Case = tuple[str, bytes, bytes, int, int]
# (what, head, piece streamed after it, how many times, expected status)
BEYOND_HEAD_LIMITS: list[Case] = [
    ("1 MB header", HEADER, KB64, 16, 431),
    ("10 MB header", HEADER, KB64, 160, 431),
    ("9 kB target", b"GET /?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"", 0, 414),
    ("200 headers", b"GET / HTTP/1.1\r\n" + b"X-N: 1\r\n" * 200 + b"\r\n", b"", 0, 431),
]


def oversized_bodies(method: str, path: str, *, chunked: bool) -> list[Case]:
    """20 MB bodies for `path`: declared, and streamed in chunks when the route reads
    its body (a chunked body is counted as it is read)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    declared = head.encode() + b"Content-Length: 20971520\r\n\r\n"
    cases = [(f"20 MB body, declared, {method}", declared, KB64, 320, 413)]
    if chunked:
        streamed = head.encode() + b"Transfer-Encoding: chunked\r\n\r\n"
        piece = b"10000\r\n" + KB64 + b"\r\n"
        cases.append((f"20 MB body, chunked, {method}", streamed, piece, 320, 413))
    return cases


def probe_limits(url: str, server: int, label: str, cases: list[Case]) -> None:
    """Each request beyond a limit gets its status and the worker keeps serving.
    Prints the time to the refusal and the worker's memory around it."""
    port = int(url.rsplit(":", 1)[1])
    for name, head, piece, repeat, status in cases:
        before = worker_rss_mb(server)
        status_line, seconds = send_raw(port, head, piece, repeat)
        assert status_line.split()[1:2] == [str(status).encode()], (name, status_line)
        after = worker_rss_mb(server)
        assert get(f"{url}/health")[0] == 200
        print(
            f"{label}: {name}: {status} after {seconds * 1000:.1f} ms, "
            f"worker RSS {before:.1f} -> {after:.1f} MB"
        )


@pytest.mark.parametrize("database", DATABASES)
def test_hostile_clients_find_no_server_error(
    project: Path, database_url: str | None, database: str
) -> None:
    bin_dir = project / ".venv" / "bin"
    port = free_port()
    env = {
        "ENVIRONMENT": "production",
        # The schema is what schemathesis tests against; hardening turns it off.
        "DOCS_ENABLED": "true",
        "WEB_CONCURRENCY": "1",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
        run(bin_dir / "alembic", "upgrade", "head", cwd=project, env=env)
    command = [str(bin_dir / "gunicorn"), "app.main:app", "--bind", f"127.0.0.1:{port}"]
    with serving(command, project, env, port) as (url, server):
        if database_url:
            # Aimed at a stored item: refused before the route, they cannot touch it.
            kept = store_kept_item(url, bin_dir, database_url, project)
            target = f"/api/items/{KEPT_ID}"
            cases = [
                *oversized_bodies("PATCH", target, chunked=True),
                *oversized_bodies("DELETE", target, chunked=False),
            ]
        else:
            cases = oversized_bodies("POST", "/health", chunked=False)
        probe_limits(url, server, f"{database}, production", [*cases, *BEYOND_HEAD_LIMITS])
        if database_url:
            assert get(f"{url}{target}")[2] == kept

        # Its valid requests may change or delete any item: this comes after.
        result = run(
            Path(sys.executable).with_name("schemathesis"),
            *("--no-color", "run", f"{url}/openapi.json", "--checks", "all"),
            *("--phases", PHASES, "--seed", str(SEED)),
            check=False,
            cwd=project,
        )
        summary = result.stdout.strip().splitlines()[-1]
        print(f"{database}: schemathesis: {summary}")
        assert result.returncode == 0, result.stdout[-6000:]
        assert "No issues found" in summary, result.stdout[-6000:]


def store_kept_item(url: str, bin_dir: Path, database_url: str, project: Path) -> bytes:
    request = urllib.request.Request(
        f"{url}/api/items",
        data=json.dumps(KEPT).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.load(response)
    statement = f"UPDATE items SET id = {KEPT_ID} WHERE id = {created['id']}"
    run(bin_dir / "python", "-c", ADMIN_SQL, database_url, statement, cwd=project)
    code, _, body = get(f"{url}/api/items/{KEPT_ID}")
    assert code == 200
    return body


def development_command(project: Path, port: int) -> list[str]:
    """The development image's CMD, as the Dockerfile states it, on another port."""
    dockerfile = (project / "Dockerfile").read_text()
    stage = dockerfile.split(" AS development", 1)[1]
    cmd = re.search(r"^CMD (\[.*?\])$", stage.replace("\\\n", ""), re.M | re.S)
    assert cmd, "no CMD in the development stage"
    command: list[str] = json.loads(cmd.group(1))
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    return [str(project / ".venv" / "bin" / command[0]), *command[1:]]


@pytest.mark.parametrize("database", ["none"])
def test_development_server_has_the_same_limits(project: Path, database: str) -> None:
    port = free_port()
    command = development_command(project, port)
    with serving(command, project, {"ENVIRONMENT": "development"}, port) as (url, server):
        cases = oversized_bodies("POST", "/health", chunked=False)
        probe_limits(url, server, "development", [*cases, *BEYOND_HEAD_LIMITS])
