"""What the benchmark compares (variants) and what it reports (figures and targets).

Both are data: the measuring code never branches on a variant's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BASELINE_DOCKERFILE = BENCH / "baseline" / "Dockerfile"


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
)
OURS = "ours"
BASELINE = "baseline"
# What the Prometheus middleware costs: /health requests/s of ours against metrics off.
# Both run side by side and take the load in turn (A B B A), a few seconds each, so a
# change in the machine's other load hits both alike; the variants' own figures, a
# minute apart, are too far apart for a difference of a few per cent.
METRICS_OFF = "metrics_off"
METRICS_COST_ROUTE = "/health"
METRICS_COST_TARGET = 0.10
METRICS_COST_ROUNDS = 4  # of A B B A, per run
METRICS_COST_LOAD_S = 3


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
    ratio_target: float | None = None  # ours / baseline
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
        ratio_target=0.1,
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
        ratio_target=0.6,
    ),
    Figure(
        "first_200_s",
        "`docker run` to first 200 on /health",
        "s",
        Stage.RUN,
        target=1.0,
        ratio_target=0.7,
    ),
    Figure("idle_rss_1w_mb", "idle RSS, 1 worker", "MB", Stage.RUN, target=60),
    Figure(
        "idle_pss_worker_mb", "idle PSS per worker, default workers", "MB", Stage.RUN, target=60
    ),
    Figure("idle_container_mb", "idle PSS of the container, default workers", "MB", Stage.RUN),
    Figure(
        "health_rps",
        "/health requests/s, 1 worker",
        "req/s",
        Stage.RUN,
        higher_is_better=True,
        target=8000,
    ),
    Figure("health_p50_ms", "/health p50 latency", "ms", Stage.RUN),
    Figure("health_p99_ms", "/health p99 latency", "ms", Stage.RUN, target=15),
    Figure(
        "items_rps",
        "GET /api/items?limit=10 requests/s, 1 worker",
        "req/s",
        Stage.RUN,
        higher_is_better=True,
    ),
    Figure("items_p50_ms", "GET /api/items p50 latency", "ms", Stage.RUN),
    Figure("items_p99_ms", "GET /api/items p99 latency", "ms", Stage.RUN),
)
