"""The benchmark's outputs: JSON (everything), a Markdown table and a PNG chart."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.figure
from spec import BASELINE, METRICS_COST_LOAD_S, METRICS_COST_TARGET, OURS, Comparison, Figure


def figure_json(figure: Figure) -> dict[str, Any]:
    return asdict(figure) | {"stage": figure.stage.value}


def median(data: dict[str, Any], variant: str, key: str) -> float:
    return float(data["variants"][variant]["figures"][key]["median"])


def ratio(data: dict[str, Any], key: str) -> float | None:
    baseline = median(data, BASELINE, key)
    return median(data, OURS, key) / baseline if baseline else None


def meets(value: float | None, limit: float, higher_is_better: bool) -> bool:
    if value is None:
        return False
    return value >= limit if higher_is_better else value <= limit


def analysis(data: dict[str, Any]) -> dict[str, Any]:
    """Ratios ours / baseline and, for each target, whether ours met it."""
    ratios = {f["key"]: ratio(data, f["key"]) for f in data["figures"]}
    verdicts = {}
    for f in data["figures"]:
        verdict = {}
        if f["target"] is not None:
            ours = median(data, OURS, f["key"])
            verdict["target"] = meets(ours, f["target"], f["higher_is_better"])
        if f["ratio_target"] is not None:
            verdict["ratio"] = meets(ratios[f["key"]], f["ratio_target"], False)
        if verdict:
            verdicts[f["key"]] = verdict
    return {"ratios": ratios, "verdicts": verdicts}


def metrics_cost(ratios: list[float]) -> dict[str, Any]:
    """The share of throughput the metrics take: 1 - the median of the rounds' ratios."""
    cost = 1 - statistics.median(ratios)
    return {"ratios": ratios, "cost": cost, "target": METRICS_COST_TARGET,
            "met": cost <= METRICS_COST_TARGET}  # fmt: skip


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
    return {
        "spec": asdict(spec),
        "rounds": rounds,
        "variant": ours,
        "reference": reference,
        "rps_ratio": rps_ratio,
        "tail": tail,
        "met": {
            "rps_ratio": rps_ratio >= spec.rps_ratio_target,
            "tail": tail <= spec.tail_target,
        },
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


def target_text(f: dict[str, Any]) -> str:
    parts = []
    if f["target"] == 0:
        parts.append("none")
    elif f["target"] is not None:
        parts.append(f"{'≥' if f['higher_is_better'] else '≤'} {f['target']:,g} {f['unit']}")
    if f["ratio_target"] is not None:
        parts.append(f"≤ {f['ratio_target']:g}x baseline")
    return "; ".join(parts)


def verdict_text(verdict: dict[str, bool] | None) -> str:
    if not verdict:
        return ""
    return " / ".join("met" if ok else "**missed**" for ok in verdict.values())


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def cost_text(cost: dict[str, Any]) -> str:
    rounds = ", ".join(f"{ratio:.3f}" for ratio in cost["ratios"])
    verdict = "met" if cost["met"] else "**missed**"
    return (
        f"/health requests/s, metrics on against off: a cost of **{cost['cost']:.1%}** "
        f"(1 - the median ratio of {len(cost['ratios'])} rounds of A B B A, "
        f"{METRICS_COST_LOAD_S} s of load each, both containers side by side: {rounds}); "
        f"target ≤ {cost['target']:.0%}: {verdict}"
    )


def comparison_lines(result: dict[str, Any], titles: dict[str, str]) -> list[str]:
    spec, ours, reference = result["spec"], result["variant"], result["reference"]
    met = {key: "met" if ok else "**missed**" for key, ok in result["met"].items()}
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
        f"- requests/s, ours / reference: **{result['rps_ratio']:.2f}x** "
        f"(target ≥ {spec['rps_ratio_target']:g}x: {met['rps_ratio']})",
        f"- ours p99 / p50: **{result['tail']:.1f}** "
        f"(target ≤ {spec['tail_target']:g}: {met['tail']})",
    ]


def table(data: dict[str, Any]) -> list[list[str]]:
    """Header and rows: one column per variant, the ratio right after the baseline's."""
    variants = data["variants"]
    header = ["figure", "target"]
    for name, variant in variants.items():
        header += [variant["title"]] + (["ours / baseline"] if name == BASELINE else [])
    rows = [[*header, "ours vs target"]]
    for f in data["figures"]:
        row = [f"{f['label']} ({f['unit']})", target_text(f)]
        for name, variant in variants.items():
            row.append(cell(variant["figures"][f["key"]], f["unit"]))
            if name == BASELINE:
                row.append(ratio_text(data["ratios"][f["key"]]))
        rows.append([*row, verdict_text(data["verdicts"].get(f["key"]))])
    return rows


def markdown(data: dict[str, Any]) -> str:
    meta, variants = data["meta"], data["variants"]
    header, *rows = table(data)
    headline = [
        f"- {f['label']}: **{ratio_text(data['ratios'][f['key']])}**"
        + (f" (target ≤ {f['ratio_target']:g}x)" if f["ratio_target"] is not None else "")
        for f in data["figures"]
        if f["charted"] and data["ratios"][f["key"]] is not None
    ]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), Docker Engine "
        f"{meta['docker_engine']}, base image `{meta['base_image']}`. Each figure is the median "
        f"of {meta['runs']} run(s), min-max in brackets; {meta['load_seconds']:g} s of load per "
        f"route at {meta['connections']} connections. MB = 10⁶ bytes."
        + (" **Quick run: cold builds were not cold.**" if meta["quick"] else ""),
        "",
        "## Ours / baseline",
        "",
        *headline,
        "",
        "## What metrics cost",
        "",
        f"- {cost_text(data['metrics_cost'])}",
        "",
        f"## The database route against the raw driver ({meta['database']})",
        "",
        *comparison_lines(data["database_route"], {k: v["title"] for k, v in variants.items()}),
        "",
        "## All figures",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "![Each figure relative to the baseline](results.png)",
        "",
        "## Variants",
        "",
        *(f"- **{v['title']}**: {v['description']}." for v in variants.values()),
        "",
        "## Method",
        "",
        f"- Cold build: {meta['cold_build']}. Rebuild: one line appended to `app/main.py`, "
        "then the same build with the cache.",
        "- Seed knobs run our image: its build, context and size figures are ours.",
        "- Every container runs with `ENVIRONMENT=production` and without its image's "
        "healthcheck; all but the baseline also with the `docker run` equivalents of their "
        "production compose file's settings for the backend (read-only root, dropped "
        "capabilities, init: see `run_args` in the JSON).",
        "- Start-up and idle PSS: the project's default number of workers. Idle RSS and "
        "load: one worker pinned to core 1; `wrk` (one thread) and the database on core 0, "
        "against the container's bridge address, after a 1 s warm-up (none in a quick run).",
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
