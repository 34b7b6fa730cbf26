"""The locks match the dependency lists they were compiled from, and every rendering
ships its variant's lock byte for byte. No network: stale means re-run scripts/lock.py."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from conftest import DATABASES, REPO, Renderer


def load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", REPO / "scripts" / "lock.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = load_lock_script()


@pytest.mark.parametrize("database", DATABASES)
def test_locks_are_fresh(database: str) -> None:
    digest = LOCK.input_digest(LOCK.render_pyproject(database))
    for name in LOCK.LOCK_FILES:
        lock = REPO / "locks" / database / name
        assert LOCK.recorded_digest(lock) == digest, (
            f"{lock.relative_to(REPO)} is stale: run `python scripts/lock.py {database}`"
        )


@pytest.mark.parametrize("database", DATABASES)
def test_locks_pin_every_package_with_hashes(database: str) -> None:
    for name in LOCK.LOCK_FILES:
        text = (REPO / "locks" / database / name).read_text()
        pins = [line for line in text.splitlines() if line and line[0].isalnum()]
        assert pins, name
        assert all("==" in pin for pin in pins), name
        assert text.count("--hash=sha256:") >= len(pins), name
        assert text.endswith("\n"), name
        assert not text.endswith("\n\n"), name


def test_requirement_templates_only_include_the_locks() -> None:
    backend = REPO / "template" / "backend"
    for name in LOCK.LOCK_FILES:
        expected = '{% include "locks/" ~ database ~ "/' + name + '" %}'
        assert (backend / f"{name}.jinja").read_text() == expected


@pytest.mark.parametrize("database", DATABASES)
def test_rendering_ships_the_lock_byte_for_byte(render: Renderer, database: str) -> None:
    project = render(database=database)
    for name in LOCK.LOCK_FILES:
        rendered = (project / "backend" / name).read_bytes()
        assert rendered == (REPO / "locks" / database / name).read_bytes(), name
