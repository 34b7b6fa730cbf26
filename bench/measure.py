"""Measuring primitives: Docker builds and containers, HTTP probes, wrk and /proc."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MB = 1_000_000
BUILD_TIMEOUT_S = 1800
START_TIMEOUT_S = 60


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and shows its output."""


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    with_stderr: bool = False,
) -> str:
    """Run a command and return its stdout (its stderr too if asked); fail loudly."""
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if with_stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + (proc.stderr or "")).splitlines()[-40:])
        raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def docker(*args: str, timeout: float = 300) -> str:
    return run(["docker", *args], timeout=timeout).strip()


# --- Builds -----------------------------------------------------------------------------

# A Dockerfile step as BuildKit's plain progress names it: "#7 [venv 2/3] RUN ...".
STEP = re.compile(r"^#(\d+) \[(?:[\w.-]+ )?\d+/\d+\] (.+)$")
CACHED = re.compile(r"^#(\d+) CACHED$")
# The context's vertex; the .dockerignore's vertex prints "transferring context" too.
CONTEXT_VERTEX = re.compile(r"^#(\d+) \[internal\] load build context$")
SENT = re.compile(r"^#(\d+) transferring context: ([\d.]+)([kMG]?B)")
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
# Steps that install third-party packages: a code-only change must not re-run them.
DEPENDENCY_STEP = re.compile(r"requirements|pip install|uv pip|uv sync")


@dataclass(frozen=True)
class Build:
    seconds: float
    image_id: str
    steps_run: list[str]  # Dockerfile steps that were not CACHED (FROM excluded)
    context_bytes: int

    @property
    def dependency_steps_run(self) -> list[str]:
        return [step for step in self.steps_run if DEPENDENCY_STEP.search(step)]


def parse_progress(log: str) -> tuple[list[str], int]:
    """Steps not CACHED and bytes of build context sent, from `--progress=plain`."""
    steps: dict[str, str] = {}
    cached: set[str] = set()
    context_vertex, context = None, 0
    for line in log.splitlines():
        if step := STEP.match(line):
            # FROM only resolves the local base image; BuildKit never marks it CACHED.
            if not step[2].startswith("FROM "):
                steps.setdefault(step[1], " ".join(step[2].split()))
        elif hit := CACHED.match(line):
            cached.add(hit[1])
        elif vertex := CONTEXT_VERTEX.match(line):
            context_vertex = vertex[1]
        elif (sent := SENT.match(line)) and sent[1] == context_vertex:
            context = max(context, round(float(sent[2]) * UNITS[sent[3]]))
    return [name for vertex, name in steps.items() if vertex not in cached], context


def build(
    context: Path,
    dockerfile: Path,
    *,
    tag: str,
    target: str | None,
    build_args: Mapping[str, str],
    no_cache: bool,
) -> Build:
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        cmd = ["docker", "build", "--progress=plain", "--iidfile", str(iidfile)]
        cmd += ["-f", str(dockerfile), "-t", tag]
        cmd += ["--no-cache"] if no_cache else []
        cmd += ["--target", target] if target else []
        for name, value in build_args.items():
            cmd += ["--build-arg", f"{name}={value}"]
        start = time.perf_counter()
        # Plain progress goes to stderr.
        log = run(
            [*cmd, str(context)],
            timeout=BUILD_TIMEOUT_S,
            env={"DOCKER_BUILDKIT": "1"},
            with_stderr=True,
        )
        seconds = time.perf_counter() - start
        image_id = iidfile.read_text().strip()
    steps_run, context_bytes = parse_progress(log)
    return Build(seconds, image_id, steps_run, context_bytes)


def prune_build_cache(*, everything: bool) -> None:
    """Empty BuildKit's cache (cache mounts included), or only its copies of contexts.

    Local base images stay either way. Without its copy, the next build sends the whole
    context, so its "transferring context" is the context's full size.
    """
    only = [] if everything else ["--filter", "type=source.local"]
    docker("builder", "prune", "--all", "--force", *only, timeout=600)


def image_bytes(ref: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref))


# --- Resources --------------------------------------------------------------------------


class Resources:
    """Every container, network and image the benchmark creates, removed on exit."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []

    def __enter__(self) -> Resources:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def name(self, *parts: str) -> str:
        return "-".join((self.prefix, *parts))

    def network(self, *parts: str) -> str:
        name = self.name(*parts)
        docker("network", "create", name)
        self.networks.append(name)
        return name

    def volume(self, *parts: str) -> str:
        name = self.name(*parts)
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def container(self, image: str, *args: str, name: str, command: Sequence[str] = ()) -> str:
        """Start a detached container; `args` are `docker run` options."""
        self.containers.append(name)
        docker("run", "--detach", "--name", name, *args, image, *command)
        return name

    def remove_container(self, name: str) -> None:
        # -v: the anonymous volumes a database image declares go with it.
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        if name in self.containers:
            self.containers.remove(name)

    def keep_image(self, ref: str) -> None:
        self.images.append(ref)

    def close(self) -> None:
        for name in reversed(self.containers):
            self.remove_container(name)
        for name in self.networks:
            subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)
        for name in self.volumes:
            subprocess.run(["docker", "volume", "rm", name], capture_output=True, check=False)
        if self.images:
            subprocess.run(["docker", "rmi", "-f", *self.images], capture_output=True, check=False)
        self.networks.clear()
        self.volumes.clear()
        self.images.clear()


def container_ip(name: str, network: str) -> str:
    template = f"{{{{(index .NetworkSettings.Networks {json.dumps(network)}).IPAddress}}}}"
    return docker("inspect", "--format", template, name)


def logs(name: str) -> str:
    return run(["docker", "logs", name], with_stderr=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- HTTP ---------------------------------------------------------------------------------


def request(
    host: str, port: int, method: str, path: str, body: object | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_200(host: str, port: int, path: str, *, since: float, name: str) -> float:
    """Seconds from `since` (a perf_counter reading) to the first 200 on `path`."""
    deadline = since + START_TIMEOUT_S
    while time.perf_counter() < deadline:
        try:
            if request(host, port, "GET", path)[0] == 200:
                return time.perf_counter() - since
        except (OSError, http.client.HTTPException):
            pass  # not listening yet: the tight loop below is the measurement
        time.sleep(0.005)
    raise BenchError(f"{name}: no 200 on {path} in {START_TIMEOUT_S} s:\n{logs(name)[-3000:]}")


def response_status(conn: socket.socket, rest: bytes) -> int:
    """Send the rest of a request on an open connection: the status it gets, 0 if none."""
    try:
        conn.sendall(rest)
        response = http.client.HTTPResponse(conn)
        response.begin()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0


def poll(condition: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> bool:
    """Whether `condition` became true within `timeout` seconds; it may fail meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except (OSError, http.client.HTTPException, BenchError):
            pass  # a process gone or a port not answering yet
        time.sleep(0.05)
    return False


def wait_for_log(name: str, text: str, count: int) -> None:
    """Wait until `text` appears `count` times in a container's output."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while logs(name).count(text) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: {text!r} not seen {count} times:\n{logs(name)[-3000:]}")
        time.sleep(0.1)


# --- Imports ------------------------------------------------------------------------------

# `-X importtime`: "import time: <self us> | <cumulative us> | <indent><module>".
IMPORT_TIME = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \| +([\w.]+)\s*$", re.M)


def import_times(log: str) -> dict[str, float]:
    """Milliseconds spent importing each top-level package, summed over the processes."""
    by_package: Counter[str] = Counter()
    for self_us, module in IMPORT_TIME.findall(log):
        by_package[module.split(".")[0]] += int(self_us)
    return {package: us / 1000 for package, us in by_package.items()}


# --- Memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    args: str
    rss: int  # bytes
    pss: int  # bytes


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes by field of /proc/PID/smaps_rollup, read from the host (same PID namespace)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value) * 1024
    return fields


def processes(name: str) -> list[Process]:
    """The container's processes, with host PIDs and memory."""
    rows = docker("top", name, "-eo", "pid,ppid,args").splitlines()[1:]
    found = []
    for row in rows:
        pid, ppid, args = row.split(None, 2)
        memory = smaps_rollup(int(pid))
        found.append(Process(int(pid), int(ppid), args, memory["Rss"], memory["Pss"]))
    return found


def workers(procs: Sequence[Process]) -> list[Process]:
    """Server workers: processes without children, other than multiprocessing's helpers."""
    parents = {proc.ppid for proc in procs}
    return [p for p in procs if p.pid not in parents and "resource_tracker" not in p.args]


# --- Load ---------------------------------------------------------------------------------

WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.+)")
TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str  # wrk's own words for non-2xx responses and socket errors; "" when none


def parse_wrk(output: str) -> Load:
    latency = {int(q): float(v) * TO_MS[unit] for q, v, unit in WRK_LATENCY.findall(output)}
    rps = WRK_RPS.search(output)
    if rps is None or set(latency) != {50, 99}:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    errors = "; ".join(m[0] for m in WRK_ERRORS.finditer(output))
    return Load(float(rps[1]), latency[50], latency[99], errors)


def wrk(url: str, *, connections: int, seconds: float, cpu: int) -> Load:
    """Load from one thread on one core; the server runs pinned to another."""
    cmd = ["taskset", "-c", str(cpu), "wrk", "--latency", "-t1", f"-c{connections}"]
    cmd += [f"-d{max(1, round(seconds))}s", "--timeout", "5s", url]
    return parse_wrk(run(cmd, timeout=seconds + 60))


def missing_tools() -> list[str]:
    return [tool for tool in ("docker", "wrk", "taskset") if shutil.which(tool) is None]
