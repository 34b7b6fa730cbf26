"""What the benchmark compares (variants) and what it reports (figures and targets).

Both are data: the measuring code never branches on a variant's name.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BASELINE_DOCKERFILE = BENCH / "baseline" / "Dockerfile"
ANCHORS = BENCH / "anchors"
SERVERS = BENCH / "servers"
REFERENCE = BENCH / "reference"
APP_DIR = "/app"  # the image's working directory, where its server imports from
# uvicorn's line once a worker's lifespan start-up is done; a server that prints
# another says so in its variant.
UVICORN_READY = "Application startup complete"
# The routes loaded, by the key their figures and comparisons name them with; the
# database route reads every row the bench seeds.
SEED_ROWS = 10
ROUTES = {"health": "/health", "items": f"/api/items?limit={SEED_ROWS}"}


def route_title(route: str) -> str:
    return f"GET {ROUTES[route]}"


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    description: str
    color: str  # in the chart
    # Answers given on top of the template's defaults.
    answers: Mapping[str, Any] = field(default_factory=dict)
    # None: the project's own backend/Dockerfile, `production` target.
    dockerfile: Path | None = None
    # Runtime-only variants run another variant's image instead of building one.
    image_of: str | None = None
    run_env: Mapping[str, str] = field(default_factory=dict)
    # Run as the production compose file runs the backend (read-only, no capabilities...).
    compose_settings: bool = True
    # Files of bench/reference/ mounted into the container, by their path there: a
    # module served in place of the app's own, or next to it by `command`.
    mounts: Mapping[str, str] = field(default_factory=dict)
    # The image's command replaced, as `docker run IMAGE COMMAND...` does; () keeps it.
    command: tuple[str, ...] = ()
    # What the server prints once per worker when that worker is ready.
    ready_log: str = UVICORN_READY
    # A Dockerfile built on another variant's image gets it as the BASE_IMAGE argument.
    build_on: str | None = None
    # Files of bench/ added to the build context.
    context_files: tuple[Path, ...] = ()

    @property
    def image_owner(self) -> str:
        return self.image_of or self.name


VARIANTS: tuple[Variant, ...] = (
    Variant(
        name="ours",
        color="#2b6cb0",
        title="ours",
        description="the project as generated with the default answers",
    ),
    Variant(
        name="unhardened",
        color="#63b3ed",
        title="hardening off",
        description="the project generated with production_hardening=false",
        answers={"production_hardening": False},
    ),
    Variant(
        name="baseline",
        color="#a0aec0",
        title="baseline",
        description=(
            "the same rendered app and base image built the naive way: one stage, "
            "COPY . . before pip install --no-cache-dir, no cache mounts, no "
            ".dockerignore, uvicorn with its INFO access log"
        ),
        dockerfile=BASELINE_DOCKERFILE,
        compose_settings=False,
    ),
    Variant(
        name="seed_knobs",
        color="#dd6b20",
        title="seed knobs",
        description=(
            "our image run with the seed guide's environment knobs "
            "PYTHONOPTIMIZE=1 and PYTHONDONTWRITEBYTECODE=1"
        ),
        image_of="ours",
        run_env={"PYTHONOPTIMIZE": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    ),
    Variant(
        name="metrics_off",
        color="#38a169",
        title="metrics off",
        description="our image run with METRICS_ENABLED=false: no Prometheus middleware",
        image_of="ours",
        run_env={"METRICS_ENABLED": "false"},
    ),
    Variant(
        name="raw_driver",
        color="#805ad5",
        title="raw driver, bare server",
        description=(
            "the database route's floor: the route written by hand on the database's "
            "own async driver (asyncpg, aiomysql, aiosqlite: bench/reference/raw_drivers.py) "
            "as a bare ASGI app with no framework (bench/reference/raw_items.py), same two "
            "queries and JSON shape, served by our image's server in place of the app"
        ),
        image_of="ours",
        mounts={
            "raw_items.py": f"{APP_DIR}/app/main.py",
            "raw_drivers.py": f"{APP_DIR}/raw_drivers.py",
        },
    ),
    Variant(
        name="raw_driver_in_app",
        color="#6b46c1",
        title="raw driver, in the app",
        description=(
            "the database route's reference: our app as create_app() builds it (same "
            "middleware, settings, error handling and server) with GET /api/items answered "
            "by a handler written by hand on the same driver code as the bare server's, "
            "same query parameters validated by FastAPI and the same ItemPage "
            "(bench/reference/raw_in_app.py)"
        ),
        image_of="ours",
        mounts={
            "raw_in_app.py": f"{APP_DIR}/raw_in_app.py",
            "raw_drivers.py": f"{APP_DIR}/raw_drivers.py",
        },
        # The image's server and its settings (/app/gunicorn.conf.py), another module.
        command=("gunicorn", "raw_in_app:app"),
    ),
    Variant(
        name="uv_docker_example",
        color="#805ad5",
        title="uv-docker-example",
        description=(
            "anchor: the multistage Dockerfile of astral-sh/uv-docker-example (uv, "
            "bytecode, a slim final stage without uv), building the same app from the "
            "same base and lock; its adaptations head bench/anchors/uv-docker-example.Dockerfile"
        ),
        dockerfile=ANCHORS / "uv-docker-example.Dockerfile",
        compose_settings=False,
    ),
    Variant(
        name="full_stack_template",
        color="#d53f8c",
        title="full-stack-fastapi-template",
        description=(
            "anchor: the backend Dockerfile of fastapi/full-stack-fastapi-template (one "
            "stage, uv, bytecode) on the slim base, building the same app from the same "
            "lock; its adaptations head bench/anchors/full-stack-fastapi-template.Dockerfile"
        ),
        dockerfile=ANCHORS / "full-stack-fastapi-template.Dockerfile",
        compose_settings=False,
    ),
    Variant(
        name="uvicorn_workers",
        color="#319795",
        title="uvicorn --workers",
        description=(
            "server: our image run by uvicorn's own supervisor (spawned workers, each "
            "importing the app) with our protocol, no server header and no access log, "
            "in place of gunicorn"
        ),
        image_of="ours",
        command=tuple(
            shlex.split(
                "uvicorn app.main:app --host 0.0.0.0 --port 8000"
                " --http app.core.server:HttpProtocol --no-server-header --no-access-log"
                " --timeout-graceful-shutdown 8"
            )
        ),
    ),
    Variant(
        name="granian",
        color="#b7791f",
        title="granian",
        description=(
            "server: our image plus granian (bench/servers/, not in the product), run "
            "as an ASGI server with uvloop, HTTP/1 only, no websockets, failed workers "
            "respawned and 8 s for in-flight requests on SIGTERM, in place of gunicorn"
        ),
        dockerfile=SERVERS / "granian.Dockerfile",
        build_on="ours",
        context_files=(SERVERS / "granian.txt",),
        command=(
            "sh",
            "-c",
            'exec granian --interface asgi --host 0.0.0.0 --port 8000 --workers "$WEB_CONCURRENCY"'
            " --loop uvloop --http 1 --no-ws --respawn-failed-workers --workers-kill-timeout 8"
            " app.main:app",
        ),
        ready_log="Started worker-",
    ),
)
OURS = "ours"
BASELINE = "baseline"
UV_EXAMPLE = "uv_docker_example"
FULL_STACK = "full_stack_template"
# Ours is compared with each of these, figure by figure, as ours / theirs.
COMPARED = (BASELINE, UV_EXAMPLE, FULL_STACK)
# The servers compared, ours (gunicorn with uvicorn workers) first, and what for.
SERVERS_COMPARED = (OURS, "uvicorn_workers", "granian")
SERVER_FIGURES = (
    "health_rps",
    "health_p99_ms",
    "items_rps",
    "items_p99_ms",
    "idle_pss_worker_mb",
    "idle_pss_worker_4w_mb",
    "first_200_s",
    "drain_answered",
    "worker_replaced_s",
)
METRICS_OFF = "metrics_off"


class Stage(Enum):
    """What a figure depends on, so variants that share it share one measurement."""

    RENDER = "render"  # the answers
    BUILD = "build"  # the image
    RUN = "run"  # the image and the run-time environment


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    stage: Stage
    higher_is_better: bool = False
    target: float | None = None  # for "ours"
    # Ours / a compared variant, by its name: at most (at least, if higher is better).
    ratio_targets: Mapping[str, float] = field(default_factory=dict)
    # Whether the chart of ratios to the baseline shows it (a log scale cannot show 0).
    charted: bool = True


FIGURES: tuple[Figure, ...] = (
    # Every variant renders the same template: its ratio to the baseline is 1 by construction.
    Figure(
        "copier_copy_s",
        "`copier copy --defaults` wall time",
        "s",
        Stage.RENDER,
        charted=False,
    ),
    Figure("cold_build_s", "cold build, production image", "s", Stage.BUILD, target=30),
    Figure(
        "rebuild_s",
        "rebuild after a code-only change",
        "s",
        Stage.BUILD,
        target=3,
        ratio_targets={BASELINE: 0.1},
    ),
    Figure(
        "rebuild_steps_run",
        "build steps not CACHED in that rebuild",
        "steps",
        Stage.BUILD,
        charted=False,
    ),
    Figure(
        "rebuild_dependency_steps_run",
        "dependency steps rebuilt in that rebuild",
        "steps",
        Stage.BUILD,
        target=0,
        charted=False,
    ),
    Figure("context_mb", "build context transferred", "MB", Stage.BUILD),
    Figure("image_mb", "image size", "MB", Stage.BUILD),
    Figure(
        "added_mb",
        "bytes added over the base image",
        "MB",
        Stage.BUILD,
        target=50,
        ratio_targets={BASELINE: 0.6, UV_EXAMPLE: 0.6, FULL_STACK: 0.6},
    ),
    Figure(
        "first_200_s",
        "`docker run` to first 200 on /health",
        "s",
        Stage.RUN,
        target=1.0,
        ratio_targets={UV_EXAMPLE: 0.8},
    ),
    Figure("idle_rss_1w_mb", "idle RSS, 1 worker", "MB", Stage.RUN, target=60),
    Figure(
        "idle_pss_worker_mb", "idle PSS per worker, default workers", "MB", Stage.RUN, target=60
    ),
    Figure("idle_pss_worker_4w_mb", "idle PSS per worker, 4 workers", "MB", Stage.RUN),
    Figure(
        "idle_container_mb",
        "idle PSS of the container, default workers",
        "MB",
        Stage.RUN,
        ratio_targets={UV_EXAMPLE: 0.7, FULL_STACK: 0.7},
    ),
    Figure(
        "import_ms",
        "imports until the first 200, all processes (-X importtime)",
        "ms",
        Stage.RUN,
    ),
    Figure(
        "health_rps",
        "/health requests/s, 1 worker",
        "req/s",
        Stage.RUN,
        higher_is_better=True,
        target=8000,
        ratio_targets={UV_EXAMPLE: 1.1, FULL_STACK: 1.1},
    ),
    Figure("health_p50_ms", "/health p50 latency", "ms", Stage.RUN),
    Figure("health_p99_ms", "/health p99 latency", "ms", Stage.RUN, target=15),
    Figure(
        "items_rps",
        f"{route_title('items')} requests/s, 1 worker",
        "req/s",
        Stage.RUN,
        higher_is_better=True,
    ),
    Figure("items_p50_ms", "GET /api/items p50 latency", "ms", Stage.RUN),
    Figure("items_p99_ms", "GET /api/items p99 latency", "ms", Stage.RUN),
    # What the server does when stopped or when it loses a worker (default workers).
    Figure(
        "drain_answered",
        "a request in flight at SIGTERM answered (1) or not (0)",
        "requests",
        Stage.RUN,
        higher_is_better=True,
        charted=False,
    ),
    Figure(
        "worker_replaced_s",
        "SIGKILL of a worker to all workers back",
        "s",
        Stage.RUN,
        charted=False,
    ),
)


# --- The database route against the raw driver ---------------------------------------------


@dataclass(frozen=True)
class Database:
    """A database the bench can run the database-backed figures on."""

    answer: str  # the template's `database` answer
    # The server's container: the image (an environment variable may name another),
    # its environment, and a command run in it that succeeds once it accepts
    # connections over TCP (while initialising, servers listen on their socket only).
    # No image: the database is a file, in a volume every app container mounts.
    image_variable: str | None = None
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ready: tuple[str, ...] = ()
    # DATABASE_URL, `{host}` being the server's container; "" keeps the app's default.
    url: str = ""
    volume: str | None = None  # where the file's volume is mounted in the app containers
    # The user every app container runs as, so all can write the one file: our image's
    # (it migrates first and owns the file), where an anchor's recipe has another
    # (root, or uv-docker-example's own user).
    user: str | None = None


DB_USER = "bench"
DATABASES = {
    database.answer: database
    for database in (
        Database(
            answer="postgresql",
            image_variable="POSTGRES_IMAGE",
            image="postgres:17",
            env={"POSTGRES_USER": DB_USER, "POSTGRES_PASSWORD": DB_USER, "POSTGRES_DB": DB_USER},
            ready=("pg_isready", "-h", "127.0.0.1", "-U", DB_USER),
            url=f"postgresql+asyncpg://{DB_USER}:{DB_USER}@{{host}}:5432/{DB_USER}",
        ),
        Database(
            answer="mysql",
            image_variable="MARIADB_IMAGE",
            image="mariadb:11",
            env={
                "MARIADB_USER": DB_USER,
                "MARIADB_PASSWORD": DB_USER,
                "MARIADB_DATABASE": DB_USER,
                "MARIADB_ROOT_PASSWORD": DB_USER,
            },
            ready=("mariadb-admin", "ping", "--host=127.0.0.1", "--silent"),
            url=f"mysql+aiomysql://{DB_USER}:{DB_USER}@{{host}}:3306/{DB_USER}?charset=utf8mb4",
        ),
        Database(answer="sqlite", volume="/app/data", user="10001"),
    )
}
DEFAULT_DATABASE = "postgresql"


@dataclass(frozen=True)
class Comparison:
    """Two variants serving one route side by side, taking the load in turn (A B B A)
    for `rounds` rounds of `load_s` seconds each: a drift of the machine's other load
    hits both alike, so their ratio holds where their own figures, minutes apart, do not.
    """

    key: str
    title: str
    reference: str
    route: str  # a key of the bench's routes
    rounds: int = 2
    load_s: float = 3
    variant: str = OURS
    # No target: figures only.
    rps_ratio_target: float | None = None  # variant / reference requests/s, at least
    tail_target: float | None = None  # the variant's p99 / p50, at most
    # The requests/s figure whose ratio target against `reference` this comparison's
    # ratio decides, in place of the ratio of the two variants' own figures, measured
    # minutes apart (its target is that figure's, so both read the same number).
    figure: str | None = None


@dataclass(frozen=True)
class StartComparison:
    """Two variants started in turn (A B B A) for `rounds` rounds, each start timed from
    `docker run` to its first 200 on /health: starts seconds apart see the same machine,
    where the variants' own figures, measured minutes apart, drift more than the few
    hundredths a ratio target turns on."""

    key: str
    title: str
    reference: str
    figure: str  # the figure whose ratio target against `reference` this decides
    rounds: int = 4
    variant: str = OURS


def variant_named(name: str) -> Variant:
    return next(variant for variant in VARIANTS if variant.name == name)


def figure_named(key: str) -> Figure:
    return next(figure for figure in FIGURES if figure.key == key)


def _against(what: str, reference: str) -> str:
    """A comparison's title: what it measures, ours against `reference`."""
    return f"{what}: ours against {variant_named(reference).title}"


RAW_IN_APP = "raw_driver_in_app"
RAW_BARE = "raw_driver"
# The database route against the raw driver: in the app (the target, as the issue
# measured it) and as a bare server (the floor: figures only).
DATABASE_COMPARISONS = (
    Comparison(
        key="database_route",
        title=_against(route_title("items"), RAW_IN_APP),
        reference=RAW_IN_APP,
        route="items",
        rounds=4,
        rps_ratio_target=0.8,
        tail_target=3.0,
    ),
    Comparison(
        key="database_floor",
        title=f"{_against(route_title('items'), RAW_BARE)}, the floor",
        reference=RAW_BARE,
        route="items",
    ),
)
# /health against each anchor, side by side: the ratio target of its requests/s.
HEALTH_RPS = figure_named("health_rps")
HEALTH_COMPARISONS = tuple(
    Comparison(
        key=f"health_{anchor}",
        title=_against(route_title("health"), anchor),
        reference=anchor,
        route="health",
        rps_ratio_target=limit,
        figure=HEALTH_RPS.key,
    )
    for anchor, limit in HEALTH_RPS.ratio_targets.items()
)
# What the Prometheus middleware costs: /health requests/s of ours against metrics off,
# a few per cent, which only figures measured side by side can tell apart. The target:
# a cost of at most 10 %.
METRICS_COMPARISON = Comparison(
    key="metrics_cost",
    title=_against(route_title("health"), METRICS_OFF),
    reference=METRICS_OFF,
    route="health",
    rounds=4,
    rps_ratio_target=0.9,
)
# Start-up against each anchor whose ratio it has a target for.
FIRST_200 = figure_named("first_200_s")
START_COMPARISONS = tuple(
    StartComparison(
        key=f"start_{anchor}",
        title=_against(FIRST_200.label, anchor),
        reference=anchor,
        figure=FIRST_200.key,
    )
    for anchor in FIRST_200.ratio_targets
)
# Ours against each other server on each route, side by side: figures only, which the
# servers' table gives relative to ours.
SERVER_ROUTES = ("health", "items")
SERVER_COMPARISONS = tuple(
    Comparison(
        key=f"server_{server}_{route}",
        title=_against(route_title(route), server),
        reference=server,
        route=route,
    )
    for server in SERVERS_COMPARED[1:]
    for route in SERVER_ROUTES
)
COMPARISONS = (
    *DATABASE_COMPARISONS,
    *HEALTH_COMPARISONS,
    METRICS_COMPARISON,
    *SERVER_COMPARISONS,
)
