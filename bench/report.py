"""The benchmark's outputs: JSON (everything), a Markdown table and a PNG chart."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.figure
from spec import (
    BASELINE,
    COMPARED,
    DATABASE_COMPARISONS,
    HEALTH_COMPARISONS,
    METRICS_COMPARISON,
    OURS,
    SERVER_COMPARISONS,
    SERVER_FIGURES,
    SERVER_ROUTES,
    SERVERS_COMPARED,
    START_COMPARISONS,
    Comparison,
    Figure,
    StartComparison,
)


def figure_json(figure: Figure) -> dict[str, Any]:
    return asdict(figure) | {"stage": figure.stage.value}


def median(data: dict[str, Any], variant: str, key: str) -> float:
    return float(data["variants"][variant]["figures"][key]["median"])


def ratio(data: dict[str, Any], key: str, against: str) -> float | None:
    theirs = median(data, against, key)
    return median(data, OURS, key) / theirs if theirs else None


def meets(value: float | None, limit: float, higher_is_better: bool) -> bool:
    if value is None:
        return False
    return value >= limit if higher_is_better else value <= limit


def judged_side_by_side(data: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The ratios measured side by side that decide a figure's ratio target, by figure
    and reference: of requests/s under load, and of seconds to start."""
    loads = {
        (result["spec"]["figure"], result["spec"]["reference"]): result["rps_ratio"]
        for result in data["comparisons"].values()
        if result["spec"]["figure"] is not None
    }
    return loads | {
        (result["spec"]["figure"], result["spec"]["reference"]): result["ratio"]
        for result in data["start_comparisons"].values()
    }


def analysis(data: dict[str, Any]) -> dict[str, Any]:
    """Ratios ours / each compared variant and, for each target, whether ours met it
    (a ratio measured side by side, where there is one, decides its target)."""
    ratios = {
        f["key"]: {name: ratio(data, f["key"], name) for name in COMPARED} for f in data["figures"]
    }
    judged = judged_side_by_side(data)
    verdicts = {}
    for f in data["figures"]:
        verdict = {}
        if f["target"] is not None:
            ours = median(data, OURS, f["key"])
            verdict["target"] = meets(ours, f["target"], f["higher_is_better"])
        for name, limit in f["ratio_targets"].items():
            value = judged.get((f["key"], name), ratios[f["key"]][name])
            verdict[name] = meets(value, limit, f["higher_is_better"])
        if verdict:
            verdicts[f["key"]] = verdict
    return {"ratios": ratios, "verdicts": verdicts}


def comparison(spec: Comparison, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds: each side's requests/s, p50 and p99, the ratio of
    requests/s (the median of the rounds' ratios) and the variant's p99 / p50."""

    def side(name: str) -> dict[str, float]:
        return {
            key: statistics.median(record[name][key] for record in rounds)
            for key in ("rps", "p50_ms", "p99_ms")
        }

    ours, reference = side("variant"), side("reference")
    rps_ratio = statistics.median(r["variant"]["rps"] / r["reference"]["rps"] for r in rounds)
    tail = ours["p99_ms"] / ours["p50_ms"]
    met = {}
    if spec.rps_ratio_target is not None:
        met["rps_ratio"] = rps_ratio >= spec.rps_ratio_target
    if spec.tail_target is not None:
        met["tail"] = tail <= spec.tail_target
    return {
        "spec": asdict(spec),
        "rounds": rounds,
        "variant": ours,
        "reference": reference,
        "rps_ratio": rps_ratio,
        "tail": tail,
        "met": met,
    }


def start_comparison(spec: StartComparison, rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over the rounds: each side's seconds to its first 200, and their ratio
    (the median of the rounds' ratios)."""
    return {
        "spec": asdict(spec),
        "rounds": rounds,
        "variant": statistics.median(r["variant"] for r in rounds),
        "reference": statistics.median(r["reference"] for r in rounds),
        "ratio": statistics.median(r["variant"] / r["reference"] for r in rounds),
    }


# --- Markdown -----------------------------------------------------------------------------


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def cell(figure: dict[str, Any], unit: str) -> str:
    if unit == "steps":
        text = f"{figure['median']:g}"
        spread = f"{figure['min']:g}-{figure['max']:g}"
    else:
        text = number(figure["median"])
        spread = f"{number(figure['min'])}-{number(figure['max'])}"
    return text if figure["min"] == figure["max"] else f"{text} ({spread})"


def bound(f: dict[str, Any]) -> str:
    return "≥" if f["higher_is_better"] else "≤"


def target_text(f: dict[str, Any], data: dict[str, Any]) -> str:
    parts = []
    if f["target"] == 0:
        parts.append("none")
    elif f["target"] is not None:
        parts.append(f"{bound(f)} {f['target']:,g} {f['unit']}")
    judged = judged_side_by_side(data)
    parts += [
        f"{bound(f)} {limit:g}x {titles(data)[name]}"
        + (" side by side" if (f["key"], name) in judged else "")
        for name, limit in f["ratio_targets"].items()
    ]
    return "; ".join(parts)


def verdict_text(verdict: dict[str, bool] | None) -> str:
    if not verdict:
        return ""
    return " / ".join("met" if ok else "**missed**" for ok in verdict.values())


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def comparison_target(result: dict[str, Any], key: str, text: str) -> str:
    """` (target ...: met)`, `text` formatting the target, or nothing for a comparison
    that gives figures only."""
    if key not in result["met"]:
        return ""
    target = text.format(result["spec"][f"{key}_target"])
    return f" (target {target}: {'met' if result['met'][key] else '**missed**'})"


def comparison_lines(result: dict[str, Any], titles: dict[str, str]) -> list[str]:
    spec, ours, reference = result["spec"], result["variant"], result["reference"]
    rows = [
        (titles[spec["variant"]], ours),
        (titles[spec["reference"]], reference),
    ]
    return [
        f"{spec['title']}, {len(result['rounds'])} round(s) of A B B A, {spec['load_s']:g} s of "
        "load each, both containers side by side (medians over the rounds):",
        "",
        "| variant | req/s | p50 (ms) | p99 (ms) | p99 / p50 |",
        "|---|---|---|---|---|",
        *(
            f"| {title} | {number(side['rps'])} | {number(side['p50_ms'])} | "
            f"{number(side['p99_ms'])} | {side['p99_ms'] / side['p50_ms']:.1f} |"
            for title, side in rows
        ),
        "",
        f"- requests/s, ours / {titles[spec['reference']]}: **{result['rps_ratio']:.2f}x**"
        + comparison_target(result, "rps_ratio", "≥ {:g}x"),
        f"- ours p99 / p50: **{result['tail']:.1f}**" + comparison_target(result, "tail", "≤ {:g}"),
        "",
    ]


def start_lines(data: dict[str, Any]) -> list[str]:
    """Each start-up comparison: both sides' seconds, and the ratio with the verdict on
    its target that `analysis` reached from it."""
    names, figures = titles(data), {f["key"]: f for f in data["figures"]}
    lines = []
    for spec in START_COMPARISONS:
        result, figure = data["start_comparisons"][spec.key], figures[spec.figure]
        limit = figure["ratio_targets"][spec.reference]
        verdict = verdict_text({spec.reference: data["verdicts"][spec.figure][spec.reference]})
        lines.append(
            f"- {spec.title}, {len(result['rounds'])} round(s) of A B B A (medians over the "
            f"rounds): ours {result['variant']:.2f} s, {names[spec.reference]} "
            f"{result['reference']:.2f} s; ours / {names[spec.reference]}: "
            f"**{result['ratio']:.2f}x** (target {bound(figure)} {limit:g}x: {verdict})"
        )
    return [*lines, ""]


def comparison_section(data: dict[str, Any], specs: tuple[Comparison, ...]) -> list[str]:
    """The lines of each of these comparisons, in turn."""
    return [
        line
        for spec in specs
        for line in comparison_lines(data["comparisons"][spec.key], titles(data))
    ]


def titles(data: dict[str, Any]) -> dict[str, str]:
    return {name: variant["title"] for name, variant in data["variants"].items()}


def table(data: dict[str, Any]) -> list[list[str]]:
    """Header and rows: one column per variant, ours / a compared one right after it."""
    variants = data["variants"]
    header = ["figure", "target"]
    for name, variant in variants.items():
        header += [variant["title"]] + ([f"ours / {variant['title']}"] if name in COMPARED else [])
    rows = [[*header, "ours vs target"]]
    for f in data["figures"]:
        row = [f"{f['label']} ({f['unit']})", target_text(f, data)]
        for name, variant in variants.items():
            row.append(cell(variant["figures"][f["key"]], f["unit"]))
            if name in COMPARED:
                row.append(ratio_text(data["ratios"][f["key"]][name]))
        rows.append([*row, verdict_text(data["verdicts"].get(f["key"]))])
    return rows


def headline(data: dict[str, Any], against: str) -> list[str]:
    """Ours / one compared variant, figure by figure, with that ratio's target if any."""
    lines = [f"## Ours / {data['variants'][against]['title']}", ""]
    judged = judged_side_by_side(data)
    for f in data["figures"]:
        value = data["ratios"][f["key"]][against]
        if not f["charted"] or value is None:
            continue
        limit = f["ratio_targets"].get(against)
        target = "" if limit is None else f" (target {bound(f)} {limit:g}x)"
        if (side_by_side := judged.get((f["key"], against))) is not None:
            ratios = f"{ratio_text(value)} in separate runs, **{side_by_side:.2f}x**"
            lines.append(f"- {f['label']}: {ratios} side by side{target}")
        else:
            lines.append(f"- {f['label']}: **{ratio_text(value)}**{target}")
    return [*lines, ""]


def top_imports(data: dict[str, Any]) -> list[str]:
    """Each variant's slowest packages to import until its first 200, median of the runs."""
    lines = []
    for variant in data["variants"].values():
        runs = [run["top_imports_ms"] for run in variant["details"]["run"]]
        packages = {package for run in runs for package in run}
        by_package = {p: statistics.median(run.get(p, 0.0) for run in runs) for p in packages}
        top = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:8]
        listed = ", ".join(f"{package} {ms:,.0f}" for package, ms in top)
        lines.append(f"- **{variant['title']}**: {listed}")
    return lines


def server_table(data: dict[str, Any]) -> list[str]:
    """The servers side by side, on the figures that choose between them."""
    figures = {f["key"]: f for f in data["figures"]}
    variants = [data["variants"][name] for name in SERVERS_COMPARED]
    lines = [
        "| figure | " + " | ".join(v["title"] for v in variants) + " |",
        "|" + "---|" * (len(variants) + 1),
    ]
    for key in SERVER_FIGURES:
        f = figures[key]
        cells = [cell(v["figures"][key], f["unit"]) for v in variants]
        lines.append(f"| {f['label']} ({f['unit']}) | " + " | ".join(cells) + " |")
    side_by_side = {
        (spec.reference, spec.route): data["comparisons"][spec.key] for spec in SERVER_COMPARISONS
    }
    for route in SERVER_ROUTES:
        results = [side_by_side[name, route] for name in SERVERS_COMPARED[1:]]
        cells = ["1", *(f"{1 / result['rps_ratio']:.2f}" for result in results)]
        lines.append(
            f"| {route} requests/s side by side, relative to ours (median of "
            f"{len(results[0]['rounds'])} round(s) of A B B A, {results[0]['spec']['load_s']:g} "
            "s each) | " + " | ".join(cells) + " |"
        )
    return lines


def markdown(data: dict[str, Any]) -> str:
    meta, variants = data["meta"], data["variants"]
    header, *rows = table(data)
    lines = [
        "# Benchmark results",
        "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), Docker Engine "
        f"{meta['docker_engine']}, base image `{meta['base_image']}`. Each figure is the median "
        f"of {meta['runs']} run(s), min-max in brackets; {meta['load_seconds']:g} s of load per "
        f"route at {meta['connections']} connections. MB = 10⁶ bytes."
        + (" **Quick run: cold builds were not cold.**" if meta["quick"] else ""),
        "",
        *(line for name in COMPARED for line in headline(data, name)),
        "## What metrics cost",
        "",
        "The share of `/health`'s requests/s that the Prometheus middleware takes: 1 - the "
        "ratio below, "
        f"**{1 - data['comparisons'][METRICS_COMPARISON.key]['rps_ratio']:.1%}**.",
        "",
        *comparison_section(data, (METRICS_COMPARISON,)),
        f"## The database route against the raw driver ({meta['database']})",
        "",
        "Two references run the same two queries on the database's own driver and answer the "
        "same JSON, each served by our image's server: a handler written by hand inside our "
        "app, built by its `create_app()` (same middleware, settings and validation), which "
        "the targets hold ours to; and a bare ASGI app with no framework, the floor, given "
        "as figures only.",
        "",
        *comparison_section(data, DATABASE_COMPARISONS),
        "## /health against the anchors, side by side",
        "",
        *comparison_section(data, HEALTH_COMPARISONS),
        "## Start-up against the anchors, side by side",
        "",
        "Each start is a new container with the project's default number of workers, "
        "from `docker run` to the first 200 on /health; the two variants start in turn.",
        "",
        *start_lines(data),
        "## All figures",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "![Each figure relative to the baseline](results.png)",
        "",
        "## Servers",
        "",
        *server_table(data),
        "",
        *comparison_section(data, SERVER_COMPARISONS),
        "## Top importers",
        "",
        "Milliseconds each package takes to import (`-X importtime`, self time summed over "
        "every process of the container) from `docker run` until every worker serves:",
        "",
        *top_imports(data),
        "",
        "## Variants",
        "",
        *(f"- **{v['title']}**: {v['description']}." for v in variants.values()),
        "",
        "## Method",
        "",
        f"- Cold build: {meta['cold_build']}. Rebuild: one line appended to `app/main.py`, "
        "then the same build with the cache.",
        "- Variants that run another's image (`image_of` in the JSON) share its build, "
        "context and size figures.",
        "- Every container runs with `ENVIRONMENT=production` and without its image's "
        "healthcheck; all but the baseline and the anchors also with the `docker run` "
        "equivalents of their production compose file's settings for the backend (read-only "
        "root, dropped capabilities, init: see `run_args` in the JSON). The anchors run as "
        "their recipes do.",
        "- Start-up and idle PSS: the project's default number of workers, and idle PSS per "
        "worker again with 4. Idle RSS and load: one worker pinned to core 1; `wrk` (one "
        "thread) and the database on core 0, against the container's bridge address, after "
        "a 1 s warm-up (none in a quick run).",
        "- Drain: a `POST /api/items` sends its head and part of its body, the container "
        "gets SIGTERM, then the rest of the body follows: 1 if it gets an answer (201, or "
        "a 503 from a database too slow for it), 0 if its connection closes without one. "
        "Worker killed: SIGKILL to one worker of the default number, then the time until "
        "the server logs one more worker ready and `/health` answers.",
        f"- `/api/items` reads 10 seeded rows from the {meta['database']} database"
        + (f" of the image `{meta['database_image']}`" if meta["database_image"] else "")
        + ", migrated with each image's `alembic upgrade head`.",
        "",
    ]
    return "\n".join(lines)


# --- Chart --------------------------------------------------------------------------------


def chart(data: dict[str, Any], path: Path) -> None:
    """Each charted figure's medians divided by the baseline's, with min-max whiskers."""
    variants = data["variants"]
    figures = [
        f
        for f in data["figures"]
        if f["charted"] and all(v["figures"][f["key"]]["median"] > 0 for v in variants.values())
    ]
    fig = matplotlib.figure.Figure(figsize=(10, 1.5 + 0.6 * len(figures)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(variants)
    for index, variant in enumerate(variants.values()):
        medians, lows, highs = [], [], []
        for f in figures:
            scale = median(data, BASELINE, f["key"])
            stats = variant["figures"][f["key"]]
            medians.append(stats["median"] / scale)
            lows.append((stats["median"] - stats["min"]) / scale)
            highs.append((stats["max"] - stats["median"]) / scale)
        positions = [row + index * height for row in range(len(figures))]
        ax.barh(
            positions, medians, height, xerr=[lows, highs], label=variant["title"],
            color=variant["color"], capsize=2,
        )  # fmt: skip
    ax.set_yticks([row + 0.4 - height / 2 for row in range(len(figures))])
    ax.set_yticklabels(
        [f"{f['label']}{' (higher is better)' if f['higher_is_better'] else ''}" for f in figures]
    )
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel(
        f"relative to the baseline, log scale (median of {data['meta']['runs']} run(s), "
        "whiskers min to max)"
    )
    fig.legend(loc="outside upper center", ncols=len(variants))
    fig.savefig(path, dpi=110)


def write(data: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "results.json", folder / "results.md", folder / "results.png"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(markdown(data))
    chart(data, paths[2])
    return paths
