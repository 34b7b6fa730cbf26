"""The benchmark summarises its samples right and runs end to end, reporting every
figure of every variant.

It measures nothing here: one quick run only keeps the script from rotting.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "ours",
    "unhardened",
    "baseline",
    "seed_knobs",
    "metrics_off",
    "raw_driver",
    "raw_driver_in_app",
    "uv_docker_example",
    "full_stack_template",
    "uvicorn_workers",
    "granian",
}
# Ours is compared, figure by figure, with the naive baseline and the two anchor recipes.
COMPARED_TITLES = ("baseline", "uv-docker-example", "full-stack-fastapi-template")
# Ours side by side with a reference: the database route against the raw driver in the
# app (its target) and as a bare server (the floor), /health against each anchor and
# against metrics off (what metrics cost), and both routes against each other server.
SERVERS = ("uvicorn_workers", "granian")
SERVER_ROUTES = ("health", "items")
COMPARISONS = {
    "database_route": "raw_driver_in_app",
    "database_floor": "raw_driver",
    "health_uv_docker_example": "uv_docker_example",
    "health_full_stack_template": "full_stack_template",
    "metrics_cost": "metrics_off",
} | {f"server_{server}_{route}": server for server in SERVERS for route in SERVER_ROUTES}
# Start-up side by side: ours against the anchor it has a ratio target for.
STARTS = {"start_uv_docker_example": "uv_docker_example"}
# The databases the bench runs the database route on, each against its raw driver.
DATABASES = ["postgresql", "mysql", "sqlite"]
OUTPUTS = ("results.json", "results.md", "results.png")


def load_bench(module: str = "run") -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # run.py imports its sibling modules
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))


@pytest.mark.parametrize(
    ("samples", "median"), [([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 2.0, 8.0], 3.0), ([5.0], 5.0)]
)
def test_summary_keeps_median_min_max_and_every_sample(samples: list[float], median: float) -> None:
    summary = load_bench().summary(samples)
    assert summary == {
        "median": median,
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def test_import_times_sum_self_time_by_top_level_package_over_processes() -> None:
    log = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       120 |        120 |     sqlalchemy.sql.base",
            '{"level": "INFO", "message": "Booting worker"}',
            "import time:      1000 |       1120 |   sqlalchemy",
            "import time:       400 |        400 | fastapi",
            "import time:        80 |         80 |     sqlalchemy.dialects.postgresql",
        ]
    )
    assert load_bench("measure").import_times(log) == {"sqlalchemy": 1.2, "fastapi": 0.4}


def side_by_side_rounds(ratio: float) -> list[dict[str, dict[str, float]]]:
    """One A B B A round in which ours served `ratio` times the reference's requests/s."""
    side = {"rps": 1000.0, "p50_ms": 10.0, "p99_ms": 20.0, "errors": ""}
    return [{"variant": {**side, "rps": 1000.0 * ratio}, "reference": side}]


def separate_runs() -> dict[str, Any]:
    """Results in which every figure of every variant is alike, so each ratio is 1."""
    spec, report = load_bench("spec"), load_bench("report")
    alike = {"median": 1.0, "min": 1.0, "max": 1.0}
    return {
        "figures": [report.figure_json(figure) for figure in spec.FIGURES],
        "variants": {
            variant.name: {
                "title": variant.title,
                "figures": {figure.key: alike for figure in spec.FIGURES},
            }
            for variant in spec.VARIANTS
        },
        "comparisons": {},
        "start_comparisons": {},
    }


def side_by_side_rows(markdown_lines: list[str]) -> dict[str, list[str]]:
    """The cells of the servers' side-by-side rows, by route."""
    return {
        route: next(
            line.strip("| ").split(" | ")[1:]
            for line in markdown_lines
            if line.startswith(f"| {route} requests/s side by side, relative to ours")
        )
        for route in SERVER_ROUTES
    }


def test_health_ratio_targets_are_decided_side_by_side_not_by_separate_runs() -> None:
    spec, report = load_bench("spec"), load_bench("report")
    data = separate_runs()
    above, below = spec.HEALTH_COMPARISONS
    data["comparisons"] = {
        above.key: report.comparison(above, side_by_side_rounds(above.rps_ratio_target + 0.05)),
        below.key: report.comparison(below, side_by_side_rounds(below.rps_ratio_target - 0.05)),
    }
    analysis = report.analysis(data)

    assert analysis["ratios"][spec.HEALTH_RPS.key][above.reference] == 1.0
    verdict = analysis["verdicts"][spec.HEALTH_RPS.key]
    assert (verdict[above.reference], verdict[below.reference]) == (True, False)


@pytest.mark.parametrize(("margin", "met"), [(-0.05, True), (0.05, False)])
def test_start_ratio_targets_are_decided_side_by_side_not_by_separate_runs(
    margin: float, met: bool
) -> None:
    spec, report = load_bench("spec"), load_bench("report")
    data = separate_runs()  # alike in separate runs: a ratio of 1, above every target
    limits = spec.FIRST_200.ratio_targets
    for comparison in spec.START_COMPARISONS:
        rounds = [{"variant": limits[comparison.reference] + margin, "reference": 1.0}]
        data["start_comparisons"][comparison.key] = report.start_comparison(comparison, rounds)

    verdict = report.analysis(data)["verdicts"][spec.FIRST_200.key]

    assert {comparison.reference for comparison in spec.START_COMPARISONS} == set(limits)
    assert {name: verdict[name] for name in limits} == dict.fromkeys(limits, met)


def test_servers_table_gives_each_server_side_by_side_relative_to_ours() -> None:
    spec, report = load_bench("spec"), load_bench("report")
    data = separate_runs()
    # Their requests/s over ours, distinct for every server and route.
    relative = {
        ("uvicorn_workers", "health"): 0.5,
        ("uvicorn_workers", "items"): 1.25,
        ("granian", "health"): 2.0,
        ("granian", "items"): 4.0,
    }
    data["comparisons"] = {
        comparison.key: report.comparison(
            comparison, side_by_side_rounds(1 / relative[comparison.reference, comparison.route])
        )
        for comparison in spec.SERVER_COMPARISONS
    }

    rows = side_by_side_rows(report.server_table(data))

    for route, cells in rows.items():
        assert cells == ["1", *(f"{relative[server, route]:.2f}" for server in SERVERS)], route


@pytest.mark.parametrize("comparison", load_bench("spec").COMPARISONS, ids=lambda c: c.key)
def test_a_comparison_judges_and_reports_only_the_targets_it_has(comparison: Any) -> None:
    spec, report = load_bench("spec"), load_bench("report")
    result = report.comparison(comparison, side_by_side_rounds(1.0))
    targets = {"rps_ratio": comparison.rps_ratio_target, "tail": comparison.tail_target}
    assert set(result["met"]) == {key for key, target in targets.items() if target is not None}
    lines = report.comparison_lines(result, {v.name: v.title for v in spec.VARIANTS})
    assert sum("(target " in line for line in lines) == len(result["met"])


@pytest.fixture
def engine() -> None:
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode:
        pytest.skip("no Docker engine answers")
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install -y wrk)")


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("database", DATABASES)
def test_quick_run_reports_every_figure_of_every_variant(tmp_path: Path, database: str) -> None:
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--runs", "1"]
    cmd += ["--duration", "1", "--database", database, "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=1800)

    assert all((tmp_path / name).stat().st_size > 0 for name in OUTPUTS)
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")
    data = json.loads((tmp_path / "results.json").read_text())
    figures = {figure["key"] for figure in data["figures"]}
    assert set(data["variants"]) == VARIANTS
    for variant in data["variants"].values():
        assert set(variant["figures"]) == figures
        for key, stats in variant["figures"].items():
            (sample,) = stats["samples"]
            assert isinstance(sample, int | float), key
            assert math.isfinite(sample), key
            assert sample >= 0, key
            # One run: its sample is the median, the minimum and the maximum.
            assert stats["median"] == stats["min"] == stats["max"] == sample, key
    assert data["meta"]["database"] == database
    assert data["variants"]["ours"]["figures"]["items_rps"]["median"] > 0
    assert data["variants"]["raw_driver"]["figures"]["items_rps"]["median"] > 0
    assert data["variants"]["raw_driver_in_app"]["figures"]["items_rps"]["median"] > 0
    assert {key: c["spec"]["reference"] for key, c in data["comparisons"].items()} == COMPARISONS
    for key, comparison in data["comparisons"].items():
        (only_round,) = comparison["rounds"]
        for side in ("variant", "reference"):
            assert only_round[side]["rps"] > 0, (key, side)
            assert only_round[side]["errors"] == "", (key, side)
        assert comparison["rps_ratio"] > 0, key
    markdown = (tmp_path / "results.md").read_text()
    cost = 1 - data["comparisons"]["metrics_cost"]["rps_ratio"]
    assert "## What metrics cost\n\nThe share of `/health`'s requests/s" in markdown
    assert f"**{cost:.1%}**." in markdown
    assert f"## The database route against the raw driver ({database})" in markdown
    assert "## /health against the anchors, side by side" in markdown
    assert {key: c["spec"]["reference"] for key, c in data["start_comparisons"].items()} == STARTS
    for key, start in data["start_comparisons"].items():
        (only_round,) = start["rounds"]
        assert only_round["variant"] > 0, key
        assert only_round["reference"] > 0, key
        assert f"{start['spec']['title']}, 1 round(s) of A B B A" in markdown
        assert f"**{start['ratio']:.2f}x** (target ≤ 0.8x: " in markdown
    assert all(c["spec"]["title"] in markdown for c in data["comparisons"].values())
    assert all(f"| {data['variants'][name]['title']} |" in markdown for name in VARIANTS)
    assert all(f"## Ours / {title}" in markdown for title in COMPARED_TITLES)
    assert all(f"| ours / {title} |" in markdown for title in COMPARED_TITLES)
    assert "## Servers" in markdown
    for route, cells in side_by_side_rows(markdown.splitlines()).items():
        measured = [data["comparisons"][f"server_{server}_{route}"] for server in SERVERS]
        assert cells == ["1", *(f"{1 / c['rps_ratio']:.2f}" for c in measured)], route
    for variant in data["variants"].values():
        (run,) = variant["details"]["run"]
        assert run["top_imports_ms"], variant["title"]
        assert f"- **{variant['title']}**: " in markdown
