"""The benchmark runs end to end and reports every figure of every variant.

It measures nothing here: one quick run only keeps the script from rotting.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"ours", "unhardened", "baseline", "seed_knobs", "metrics_off"}
OUTPUTS = ("results.json", "results.md", "results.png")

pytestmark = pytest.mark.docker


@pytest.fixture
def engine() -> None:
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode:
        pytest.skip("no Docker engine answers")
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install -y wrk)")


@pytest.mark.usefixtures("engine")
def test_quick_run_reports_every_figure_of_every_variant(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--runs", "1"]
    cmd += ["--duration", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=900)

    assert all((tmp_path / name).stat().st_size > 0 for name in OUTPUTS)
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")
    data = json.loads((tmp_path / "results.json").read_text())
    figures = {figure["key"] for figure in data["figures"]}
    assert set(data["variants"]) == VARIANTS
    for variant in data["variants"].values():
        assert set(variant["figures"]) == figures
        for stats in variant["figures"].values():
            assert len(stats["samples"]) == 1
            assert stats["min"] <= stats["median"] <= stats["max"]
    assert data["metrics_cost"]["ratios"]
    markdown = (tmp_path / "results.md").read_text()
    assert "metrics on against off: a cost of" in markdown
    assert all(f"| {data['variants'][name]['title']} |" in markdown for name in VARIANTS)
