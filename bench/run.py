"""Benchmark the generated backend's images against a naive baseline with a real Docker engine.

Renders the template, builds each variant's image, runs it and measures: `copier copy`
time, cold build, code-only rebuild, build context, image size and bytes added over the
base image, `docker run` to first 200, idle memory, and requests/s with p50/p99 latency of
/health and of a database-backed read at 64 connections. Every figure is the median of
--runs runs (min and max kept, raw samples in the JSON).

The database-backed read is also measured side by side, A B B A, against two references
written by hand on the database's own driver (bench/reference/: asyncpg, aiomysql or
aiosqlite): the route inside our app (its target) and a bare ASGI app (the floor), both
served by our image's server; /health likewise against each anchor recipe, and both
routes against each other server. The report gives ours / reference. --database picks
the generated project's database: postgresql (default), mysql (MariaDB) or sqlite.

Variants: the defaults (hardening on), hardening off, a naive one-stage baseline of the
same app and base image (bench/baseline/Dockerfile), our image run with the seed
guide's environment knobs (PYTHONOPTIMIZE=1, PYTHONDONTWRITEBYTECODE=1), our image
with its Prometheus metrics off (the report gives what metrics cost, run by run), the two
anchor recipes (bench/anchors/) building the same app, and our image under uvicorn's own
supervisor and under granian (bench/servers/), each also loaded side by side with ours.

Needs: a Docker engine with BuildKit; locally, the base image
${PYTHON_IMAGE:-python:X.Y-slim} (X.Y: the default answer) and the database server's
image, ${POSTGRES_IMAGE:-postgres:17} or ${MARIADB_IMAGE:-mariadb:11}; at least 2 cores;
`wrk` and `taskset` on the host (Debian: apt-get install -y wrk util-linux). The app
server is pinned to core 1, the load generator and the database to core 0. Results go
to --out (bench/out/, not committed); --publish also writes bench/results.{json,md,png},
which the README shows.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import copier
import measure
import report
import yaml
from measure import MB, BenchError, Resources
from spec import (
    BENCH,
    COMPARISONS,
    DATABASES,
    DEFAULT_DATABASE,
    FIGURES,
    OURS,
    REFERENCE,
    REPO,
    ROUTES,
    SEED_ROWS,
    START_COMPARISONS,
    VARIANTS,
    Comparison,
    Database,
    Stage,
    StartComparison,
    Variant,
    variant_named,
)

CONNECTIONS = 64
PORT = 8000  # the app's, in its container
APP_CPU = 1  # the server's core: per-worker figures come from one worker on one core
LOAD_CPU = 0  # wrk and the database share the other core
WARMUP_S = 1  # before each measured load: opens the database pool, fills caches
IDLE_SETTLE_S = 1.0  # after start-up, before idle memory is read
SEEDED = (201, 409)  # 409: seeded by an earlier run
MANY_WORKERS = 4  # idle PSS per worker is also read with this many
TOP_IMPORTS = 10  # packages listed by their import time
# Drain: the server reads a request's head, then gets SIGTERM while its body is due.
DRAIN_SETTLE_S = 0.5
DRAIN_TIMEOUT_S = 15  # longer than any server's grace period here
# Same settings for every variant, so images are compared and not app configurations;
# the image's healthcheck probes would add processes to the memory and load figures.
RUN_ENV = {"ENVIRONMENT": "production"}
RUN_ARGS = ("--no-healthcheck",)
# `docker run`'s spelling of the compose keys that change how the backend runs; the
# others (resource limits, restart policy) do not change these figures.
COMPOSE_FLAGS: dict[str, Callable[[Any], list[str]]] = {
    "read_only": lambda on: ["--read-only"] if on else [],
    "tmpfs": lambda mounts: [f"--tmpfs={mount}" for mount in mounts],
    "cap_drop": lambda caps: [f"--cap-drop={cap}" for cap in caps],
    "security_opt": lambda options: [f"--security-opt={option}" for option in options],
    "init": lambda on: ["--init"] if on else [],
    "user": lambda user: [f"--user={user}"],
}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- Set-up -------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything the measurements of one invocation share."""

    runs: int
    duration: float
    quick: bool
    workdir: Path
    resources: Resources
    database: Database
    network: str = ""
    database_url: str = ""
    database_args: list[str] = field(default_factory=list)  # a database file: its volume and user
    answers: dict[str, Any] = field(default_factory=dict)  # the defaults, as rendered
    projects: dict[str, Path] = field(default_factory=dict)  # by variant
    contexts: dict[str, Path] = field(default_factory=dict)  # by image owner
    images: dict[str, str] = field(default_factory=dict)  # tag by image owner
    run_args: dict[str, list[str]] = field(default_factory=dict)  # by variant

    @property
    def base_image(self) -> str:
        default = f"python:{self.answers['python_version']}-slim"
        return os.environ.get("PYTHON_IMAGE", default)


def owners(stage: Stage) -> dict[str, str]:
    """For each variant, the variant whose measurement of `stage` it shares."""
    first: dict[str, str] = {}
    shared = {}
    for variant in VARIANTS:
        key = {
            Stage.RENDER: json.dumps(dict(variant.answers), sort_keys=True),
            Stage.BUILD: variant.image_owner,
            Stage.RUN: variant.name,
        }[stage]
        shared[variant.name] = first.setdefault(key, variant.name)
    return shared


def measured(stage: Stage) -> list[Variant]:
    """The variants that measure `stage` themselves."""
    return [v for v in VARIANTS if owners(stage)[v.name] == v.name]


def variant_answers(bench: Bench, variant: Variant) -> dict[str, Any]:
    return {**variant.answers, "database": bench.database.answer}


def render(answers: Mapping[str, Any], dst: Path) -> Path:
    copier.run_copy(
        str(REPO),
        str(dst),
        data=dict(answers),
        defaults=True,
        unsafe=False,
        vcs_ref="HEAD",
        quiet=True,
    )
    return dst


def rendered_answers(project: Path) -> dict[str, Any]:
    """The answers file without Copier's own entries (source path, commit)."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return {key: value for key, value in answers.items() if not key.startswith("_")}


def compose_run_args(project: Path) -> list[str]:
    """The production compose file's settings of the backend, as `docker run` options."""
    compose = yaml.safe_load((project / "docker-compose.production.yml").read_text())
    backend = compose["services"]["backend"]
    return [flag for key, to_flags in COMPOSE_FLAGS.items() if key in backend
            for flag in to_flags(backend[key])]  # fmt: skip


def build_context(variant: Variant, project: Path, workdir: Path) -> Path:
    if variant.dockerfile is None:
        return project / "backend"
    # Other recipes come without our .dockerignore: the build context is the whole directory.
    context = workdir / f"context-{variant.name}"
    shutil.copytree(project / "backend", context)
    (context / ".dockerignore").unlink(missing_ok=True)
    for path in variant.context_files:
        shutil.copy(path, context)
    return context


def database_image(database: Database) -> str | None:
    if database.image_variable is None:
        return database.image
    return os.environ.get(database.image_variable, database.image)


def start_database(bench: Bench) -> None:
    database = bench.database
    if database.volume is not None:
        volume = bench.resources.volume("db")
        bench.database_args = ["-v", f"{volume}:{database.volume}"]
        if database.user is not None:
            bench.database_args.append(f"--user={database.user}")
    image = database_image(database)
    if image is None:
        return
    name = bench.resources.name("db")
    bench.resources.container(
        image,
        "--network",
        bench.network,
        f"--cpuset-cpus={LOAD_CPU}",
        *env_args(database.env),
        name=name,
    )
    probe = ["docker", "exec", name, *database.ready]
    deadline = time.monotonic() + measure.START_TIMEOUT_S
    while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise BenchError(f"{image} did not accept connections:\n{measure.logs(name)}")
        time.sleep(0.5)
    # Its address, not its name: Docker's embedded DNS has failed to answer on a
    # loaded machine, and every lookup would be a step of each new connection.
    bench.database_url = database.url.format(host=measure.container_ip(name, bench.network))


def set_up(bench: Bench) -> None:
    for variant in VARIANTS:
        render_owner = owners(Stage.RENDER)[variant.name]
        if render_owner not in bench.projects:
            answers = variant_answers(bench, variant)
            log(f"rendering {answers}")
            bench.projects[render_owner] = render(answers, bench.workdir / render_owner)
        bench.projects[variant.name] = bench.projects[render_owner]
        compose = variant.compose_settings
        bench.run_args[variant.name] = (
            compose_run_args(bench.projects[variant.name]) if compose else []
        )
    bench.answers = rendered_answers(bench.projects[OURS])
    for variant in measured(Stage.BUILD):
        project = bench.projects[variant.name]
        bench.contexts[variant.name] = build_context(variant, project, bench.workdir)
        bench.images[variant.name] = f"{bench.resources.prefix}-{variant.name}:latest"
    bench.network = bench.resources.network("net")
    start_database(bench)


# --- Measurements -------------------------------------------------------------------------

Figures = dict[str, float]
Details = dict[str, Any]


def env_args(env: Mapping[str, str]) -> list[str]:
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


def measure_copier(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    cli = Path(sys.executable).parent / "copier"
    dst = bench.workdir / f"cli-{variant.name}"
    # Copier casts each value to its question's type; booleans as YAML spells them.
    data = [
        arg
        for key, value in variant_answers(bench, variant).items()
        for arg in ("-d", f"{key}={json.dumps(value) if isinstance(value, bool) else value}")
    ]
    start = time.perf_counter()
    measure.run([str(cli), "copy", "--defaults", "--vcs-ref", "HEAD", *data, str(REPO), str(dst)])
    seconds = time.perf_counter() - start
    shutil.rmtree(dst)
    return {"copier_copy_s": seconds}, {}


def edit_code(context: Path) -> None:
    """A code-only change: a new line at the end of the app's entry module."""
    with (context / "app" / "main.py").open("a") as module:
        module.write(f"# benchmark edit {secrets.token_hex(4)}\n")


def measure_build(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    context = bench.contexts[variant.name]
    tag = bench.images[variant.name]

    build_args = {"PYTHON_IMAGE": bench.base_image}
    if variant.build_on:
        build_args["BASE_IMAGE"] = bench.images[variant.build_on]

    def build(no_cache: bool) -> measure.Build:
        result = measure.build(
            context,
            variant.dockerfile or context / "Dockerfile",
            tag=tag,
            # The project's Dockerfile has several targets; the benchmark's own build one.
            target=None if variant.dockerfile else "production",
            build_args=build_args,
            no_cache=no_cache,
        )
        bench.resources.keep_image(result.image_id)
        return result

    # Cold means nothing reused: no layer, no cache mount (so every package is downloaded
    # again); only the local base image stays. --quick keeps the cache: it checks that
    # every step works, and measures nothing.
    measure.prune_build_cache(everything=not bench.quick)
    cold = build(no_cache=not bench.quick)
    edit_code(context)
    warm = build(no_cache=False)
    size = measure.image_bytes(tag)
    figures = {
        "cold_build_s": cold.seconds,
        "rebuild_s": warm.seconds,
        "rebuild_steps_run": len(warm.steps_run),
        "rebuild_dependency_steps_run": len(warm.dependency_steps_run),
        "context_mb": cold.context_bytes / MB,
        "image_mb": size / MB,
        "added_mb": (size - measure.image_bytes(bench.base_image)) / MB,
    }
    return figures, {"rebuild_steps_run": warm.steps_run, "cold_steps_run": cold.steps_run}


def database_options(bench: Bench) -> list[str]:
    """How a container of the app reaches the database: its URL (none: the app's
    default) and the volume of a database file."""
    url = {"DATABASE_URL": bench.database_url} if bench.database_url else {}
    return [*env_args(url), *bench.database_args]


def mount_options(variant: Variant) -> list[str]:
    """The variant's files of bench/reference/, read-only, with the image's bytecode in
    their folders hidden: it is compiled unchecked, so a module's would win over the
    file mounted in its place."""
    folders = sorted({str(PurePosixPath(target).parent) for target in variant.mounts.values()})
    return [
        *(
            f"--volume={REFERENCE / source}:{target}:ro"
            for source, target in variant.mounts.items()
        ),
        *(f"--tmpfs={folder}/__pycache__" for folder in folders),
    ]


def app_container(
    bench: Bench,
    variant: Variant,
    purpose: str,
    *args: str,
    workers: int,
    env: Mapping[str, str] | None = None,
) -> str:
    environment = {**RUN_ENV, "WEB_CONCURRENCY": str(workers), **variant.run_env, **(env or {})}
    return bench.resources.container(
        bench.images[variant.image_owner],
        "--network",
        bench.network,
        *RUN_ARGS,
        *bench.run_args[variant.name],
        *database_options(bench),
        *mount_options(variant),
        *env_args(environment),
        *args,
        name=bench.resources.name(variant.name, purpose),
        command=variant.command,
    )


def serving(bench: Bench, variant: Variant, name: str, workers: int) -> str:
    """Wait until every worker of the container is ready; its address on the network."""
    host = measure.container_ip(name, bench.network)
    measure.wait_for_200(host, PORT, "/health", since=time.perf_counter(), name=name)
    measure.wait_for_log(name, variant.ready_log, workers)
    return host


def migrate(bench: Bench, variant: Variant) -> None:
    """The one-off migration step, with the variant's own image."""
    name = bench.resources.name(variant.name, "migrate")
    bench.resources.containers.append(name)
    options = ["--rm", "--name", name, "--network", bench.network, *bench.run_args[variant.name]]
    options += database_options(bench)
    measure.docker("run", *options, bench.images[variant.image_owner], "alembic", "upgrade", "head")


def idle_workers(
    bench: Bench, variant: Variant, name: str, workers: int
) -> tuple[list[measure.Process], list[measure.Process]]:
    """The container's processes and its workers, once started and settled."""
    measure.wait_for_log(name, variant.ready_log, workers)
    time.sleep(IDLE_SETTLE_S)
    procs = measure.processes(name)
    found = measure.workers(procs)
    if len(found) != workers:
        raise BenchError(f"{name}: expected {workers} workers, found {procs}")
    return procs, found


def start(bench: Bench, variant: Variant, purpose: str) -> tuple[str, float]:
    """A container of the variant with the project's default number of workers: its
    name, and the seconds from `docker run` to its first 200 on /health."""
    port = measure.free_port()
    since = time.perf_counter()
    name = app_container(
        bench,
        variant,
        purpose,
        "-p",
        f"127.0.0.1:{port}:{PORT}",
        workers=int(bench.answers["workers"]),
    )
    try:
        return name, measure.wait_for_200("127.0.0.1", port, "/health", since=since, name=name)
    except BaseException:
        bench.resources.remove_container(name)
        raise


def measure_start(bench: Bench, variant: Variant) -> Figures:
    """Start-up time and idle memory with the project's default number of workers, and
    idle memory per worker with more of them."""
    workers = int(bench.answers["workers"])
    name, first_200 = start(bench, variant, "start")
    try:
        procs, found = idle_workers(bench, variant, name, workers)
    finally:
        bench.resources.remove_container(name)
    name = app_container(bench, variant, "many", workers=MANY_WORKERS)
    try:
        _, many = idle_workers(bench, variant, name, MANY_WORKERS)
    finally:
        bench.resources.remove_container(name)
    return {
        "first_200_s": first_200,
        "idle_pss_worker_mb": statistics.mean(p.pss for p in found) / MB,
        "idle_pss_worker_4w_mb": statistics.mean(p.pss for p in many) / MB,
        "idle_container_mb": sum(p.pss for p in procs) / MB,
    }


def measure_imports(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    """What every process of the container imports until all workers serve, by package."""
    workers = int(bench.answers["workers"])
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    name = app_container(bench, variant, "imports", workers=workers, env=env)
    try:
        serving(bench, variant, name, workers)
        by_package = measure.import_times(measure.logs(name))
    finally:
        bench.resources.remove_container(name)
    top = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:TOP_IMPORTS]
    figures = {"import_ms": sum(by_package.values())}
    return figures, {"top_imports_ms": dict(top)}


def measure_drain(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    """SIGTERM while a request's body is still arriving: is the request answered?"""
    workers = int(bench.answers["workers"])
    name = app_container(bench, variant, "drain", workers=workers)
    try:
        host = serving(bench, variant, name, workers)
        body = json.dumps({"name": f"in flight {secrets.token_hex(4)}"}).encode()
        head = (
            "POST /api/items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection((host, PORT), timeout=DRAIN_TIMEOUT_S) as conn:
            conn.sendall(head.encode() + body[:5])
            # Not a test: a pause is enough for the server to read the head, and then
            # for the signal to reach its workers.
            time.sleep(DRAIN_SETTLE_S)
            measure.docker("kill", "--signal", "TERM", name)
            time.sleep(DRAIN_SETTLE_S)
            status = measure.response_status(conn, body[5:])
    finally:
        bench.resources.remove_container(name)
    # Any answer counts (a 503 is the app's answer to a database too slow for it); 0 is
    # a connection closed or reset with no answer.
    return {"drain_answered": float(status != 0)}, {"drain_status": status}


def measure_worker_kill(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    """SIGKILL one worker: seconds until the server has all its workers ready again."""
    workers = int(bench.answers["workers"])
    name = app_container(bench, variant, "kill", workers=workers)
    try:
        host = serving(bench, variant, name, workers)
        _, found = idle_workers(bench, variant, name, workers)
        os.kill(found[0].pid, signal.SIGKILL)  # the same PID namespace as the host's
        killed = time.perf_counter()
        replaced = measure.poll(
            lambda: (
                measure.logs(name).count(variant.ready_log) > workers
                and measure.request(host, PORT, "GET", "/health")[0] == 200
            )
        )
        seconds = time.perf_counter() - killed
    finally:
        bench.resources.remove_container(name)
    return {"worker_replaced_s": seconds}, {"worker_replaced": replaced}


def seed_rows(host: str) -> None:
    for index in range(SEED_ROWS):
        body = {"name": f"bench item {index}", "description": "seeded by the benchmark"}
        deadline = time.monotonic() + measure.START_TIMEOUT_S
        # 503: the app's answer to a database slower than its timeouts, as a busy
        # machine's can be for a first connection; asked again.
        while (answer := measure.request(host, PORT, "POST", "/api/items", body))[0] not in SEEDED:
            if answer[0] != 503 or time.monotonic() > deadline:
                raise BenchError(f"seeding /api/items answered {answer[0]}: {answer[1]!r}")
            time.sleep(0.5)


def measure_load(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    """Idle RSS and throughput of one worker pinned to its own core."""
    name = app_container(bench, variant, "load", f"--cpuset-cpus={APP_CPU}", workers=1)
    try:
        # Straight to the container's bridge address: a published port would put
        # docker-proxy, unpinned, between wrk and the server.
        host = serving(bench, variant, name, 1)
        (worker,) = idle_workers(bench, variant, name, 1)[1]
        figures: Figures = {"idle_rss_1w_mb": worker.rss / MB}
        # A reference only reads: the app's variants, measured first, seed.
        if not variant.mounts:
            seed_rows(host)
        details: Details = {}
        for route, path in ROUTES.items():
            if (status := measure.request(host, PORT, "GET", path)[0]) != 200:
                raise BenchError(f"{name}: GET {path} answered {status}")
            url = f"http://{host}:{PORT}{path}"
            if not bench.quick:
                measure.wrk(url, connections=CONNECTIONS, seconds=WARMUP_S, cpu=LOAD_CPU)
            load = measure.wrk(url, connections=CONNECTIONS, seconds=bench.duration, cpu=LOAD_CPU)
            figures |= {f"{route}_rps": load.rps, f"{route}_p50_ms": load.p50_ms}
            figures[f"{route}_p99_ms"] = load.p99_ms
            details[f"{route}_errors"] = load.errors
            if load.errors:
                log(f"{variant.name} {path}: {load.errors}")
        return figures, details
    finally:
        bench.resources.remove_container(name)


def side_by_side(
    bench: Bench, pair: tuple[str, str], path: str, *, rounds: int, load_s: float
) -> list[tuple[list[measure.Load], list[measure.Load]]]:
    """Two variants' containers started side by side on the app's core, taking the load
    on `path` in turn, A B B A: per round, each one's two loads."""
    variants = [variant_named(name) for name in pair]
    names = [
        app_container(bench, variant, "pair", f"--cpuset-cpus={APP_CPU}", workers=1)
        for variant in variants
    ]
    try:
        urls = [
            f"http://{serving(bench, variant, name, 1)}:{PORT}{path}"
            for variant, name in zip(variants, names, strict=True)
        ]
        # A quick run checks the steps only: one round, no longer than its loads.
        seconds = min(load_s, bench.duration)
        loads = []
        for _ in range(1 if bench.quick else rounds):
            round_loads: tuple[list[measure.Load], list[measure.Load]] = ([], [])
            for index in (0, 1, 1, 0):
                load = measure.wrk(
                    urls[index], connections=CONNECTIONS, seconds=seconds, cpu=LOAD_CPU
                )
                round_loads[index].append(load)
            loads.append(round_loads)
        return loads
    finally:
        for name in names:
            bench.resources.remove_container(name)


def measure_comparison(bench: Bench, comparison: Comparison) -> list[dict[str, Any]]:
    """One record per A B B A round: both sides' requests/s, p50 and p99 (the
    medians of their two loads) and the errors wrk saw."""
    rounds = side_by_side(
        bench,
        (comparison.variant, comparison.reference),
        ROUTES[comparison.route],
        rounds=comparison.rounds,
        load_s=comparison.load_s,
    )
    return [
        {
            side: {
                "rps": statistics.mean(load.rps for load in loads),
                "p50_ms": statistics.median(load.p50_ms for load in loads),
                "p99_ms": statistics.median(load.p99_ms for load in loads),
                "errors": "; ".join(load.errors for load in loads if load.errors),
            }
            for side, loads in zip(("variant", "reference"), pair, strict=True)
        }
        for pair in rounds
    ]


def measure_start_comparison(bench: Bench, comparison: StartComparison) -> list[dict[str, float]]:
    """One record per A B B A round: each side's seconds to its first 200, the mean of
    its two starts."""
    variants = (variant_named(comparison.variant), variant_named(comparison.reference))
    records = []
    for _ in range(1 if bench.quick else comparison.rounds):
        seconds: tuple[list[float], list[float]] = ([], [])
        for index in (0, 1, 1, 0):
            name, first_200 = start(bench, variants[index], "pair-start")
            bench.resources.remove_container(name)
            seconds[index].append(first_200)
        records.append(
            {
                side: statistics.mean(s)
                for side, s in zip(("variant", "reference"), seconds, strict=True)
            }
        )
    return records


def measure_run(bench: Bench, variant: Variant) -> tuple[Figures, Details]:
    migrate(bench, variant)
    figures: Figures = measure_start(bench, variant)
    details: Details = {}
    for step in (measure_load, measure_imports, measure_drain, measure_worker_kill):
        more_figures, more_details = step(bench, variant)
        figures |= more_figures
        details |= more_details
    return figures, details


MEASURES: dict[Stage, Callable[[Bench, Variant], tuple[Figures, Details]]] = {
    Stage.RENDER: measure_copier,
    Stage.BUILD: measure_build,
    Stage.RUN: measure_run,
}


# --- Collection ---------------------------------------------------------------------------


@dataclass
class Samples:
    figures: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    # By variant and stage: what a run saw besides its figures (steps rebuilt, errors).
    details: dict[str, dict[Stage, list[Details]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    # Ours against a reference side by side, by comparison, one record per round.
    comparisons: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    starts: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, variant: str, stage: Stage, figures: Figures, details: Details) -> None:
        for key, value in figures.items():
            self.figures[variant][key].append(value)
        self.details[variant][stage].append(details)


def measure_all(bench: Bench) -> Samples:
    """Run after run, every variant in turn, so slow drifts of the machine hit all alike."""
    samples = Samples()
    for index in range(1, bench.runs + 1):
        for stage, measure_stage in MEASURES.items():
            for variant in measured(stage):
                log(f"run {index}/{bench.runs}: {stage.value} {variant.name}")
                samples.add(variant.name, stage, *measure_stage(bench, variant))
        for comparison in COMPARISONS:
            log(f"run {index}/{bench.runs}: {comparison.title}")
            samples.comparisons[comparison.key] += measure_comparison(bench, comparison)
        for start_comparison in START_COMPARISONS:
            log(f"run {index}/{bench.runs}: {start_comparison.title}")
            samples.starts[start_comparison.key] += measure_start_comparison(
                bench, start_comparison
            )
    return samples


def summary(values: Iterable[float]) -> dict[str, Any]:
    samples = list(values)
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def variant_results(bench: Bench, samples: Samples, variant: Variant) -> dict[str, Any]:
    figures = {}
    for figure in FIGURES:
        owner = owners(figure.stage)[variant.name]
        figures[figure.key] = summary(samples.figures[owner][figure.key]) | {
            "shared_with": None if owner == variant.name else owner
        }
    return {
        "title": variant.title,
        "description": variant.description,
        "color": variant.color,
        "answers": dict(variant.answers),
        "image_of": variant.image_of,
        "run_env": dict(variant.run_env),
        "run_args": bench.run_args[variant.name],
        "figures": figures,
        "details": {
            stage.value: samples.details[owners(stage)[variant.name]][stage] for stage in Stage
        },
    }


def machine_info() -> dict[str, Any]:
    def first(cmd: list[str], *, any_status: bool = False) -> str | None:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = proc.stdout.strip().splitlines()
        return lines[0] if lines and (any_status or proc.returncode == 0) else None

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        None,
    )  # fmt: skip
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "docker_engine": measure.docker("version", "--format", "{{.Server.Version}}"),
        "wrk": first(["wrk", "--version"], any_status=True),  # it exits 1 after its usage
        "template_commit": first(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "template_dirty": bool(first(["git", "-C", str(REPO), "status", "--porcelain"])),
    }


def results(bench: Bench, samples: Samples) -> dict[str, Any]:
    data = {
        "meta": machine_info()
        | {
            "runs": bench.runs,
            "load_seconds": bench.duration,
            "connections": CONNECTIONS,
            "quick": bench.quick,
            "cold_build": (
                "with BuildKit's cache kept (--quick: not cold)"
                if bench.quick
                else "--no-cache after `docker builder prune --all`: no layer and no "
                "package download cache reused; the base image is local"
            ),
            "base_image": bench.base_image,
            "answers": bench.answers,
            "database": bench.database.answer,
            "database_image": database_image(bench.database),
        },
        "figures": [report.figure_json(figure) for figure in FIGURES],
        "variants": {v.name: variant_results(bench, samples, v) for v in VARIANTS},
        "comparisons": {
            c.key: report.comparison(c, samples.comparisons[c.key]) for c in COMPARISONS
        },
        "start_comparisons": {
            c.key: report.start_comparison(c, samples.starts[c.key]) for c in START_COMPARISONS
        },
    }
    return data | report.analysis(data)


# --- Entry point --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds of load per route (default 10)"
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH / "out", help="output folder (default bench/out)"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write bench/results.json, results.md and results.png (committed)",
    )
    parser.add_argument(
        "--database",
        choices=sorted(DATABASES),
        default=DEFAULT_DATABASE,
        help=f"the database of the generated project (default {DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="keep BuildKit's cache for the cold builds and skip the load warm-ups: a fast "
        "end-to-end check, not a measurement",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration < 1:
        parser.error("--runs and --duration must be at least 1")
    return args


def preflight() -> None:
    if missing := measure.missing_tools():
        raise BenchError(
            f"missing on this host: {', '.join(missing)}; on Debian: "
            "apt-get install -y wrk util-linux (and a Docker engine with BuildKit)"
        )
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 cores: one for the server, one for the load generator")
    measure.docker("info", "--format", "{{.ServerVersion}}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preflight()
        prefix = f"bench-{secrets.token_hex(3)}"
        with tempfile.TemporaryDirectory() as tmp, Resources(prefix) as resources:
            bench = Bench(
                args.runs,
                args.duration,
                args.quick,
                Path(tmp),
                resources,
                DATABASES[args.database],
            )
            set_up(bench)
            data = results(bench, measure_all(bench))
    except BenchError as error:
        log(f"failed: {error}")
        return 1
    written = report.write(data, args.out)
    if args.publish:
        written += report.write(data, BENCH)
    log("wrote " + ", ".join(str(path) for path in written))
    print(report.markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
