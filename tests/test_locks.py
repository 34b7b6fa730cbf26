"""The locks match the dependency lists they were compiled from, and every rendering
ships its variant's lock byte for byte. No network: stale means re-run scripts/lock.py."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import pytest

from conftest import REPO, Renderer


def load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", REPO / "scripts" / "lock.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = load_lock_script()
VARIANTS = list(LOCK.VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_locks_are_fresh(variant: str) -> None:
    digest = LOCK.input_digest(LOCK.render_pyproject(variant))
    for name in LOCK.LOCK_FILES:
        lock = REPO / "locks" / variant / name
        assert LOCK.recorded_digest(lock) == digest, (
            f"{lock.relative_to(REPO)} is stale: run `python scripts/lock.py {variant}`"
        )


HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def pinned_hashes(text: str) -> dict[str, list[str]]:
    """Each requirement line of a lock, with the hashes of its continuation lines."""
    entries: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line and line[0].isalnum():
            current = line.removesuffix("\\").strip()
            entries[current] = []
        elif current and line.startswith(" "):
            entries[current] += HASH.findall(line)
    return entries


@pytest.mark.parametrize("variant", VARIANTS)
def test_locks_pin_every_package_with_its_own_hashes(variant: str) -> None:
    for name in LOCK.LOCK_FILES:
        text = (REPO / "locks" / variant / name).read_text()
        entries = pinned_hashes(text)
        assert entries, name
        unpinned = [pin for pin in entries if "==" not in pin]
        assert not unpinned, f"{name}: not pinned to one version: {unpinned}"
        unhashed = [pin for pin, hashes in entries.items() if not hashes]
        assert not unhashed, f"{name}: pinned without a hash: {unhashed}"
        assert text.endswith("\n"), name
        assert not text.endswith("\n\n"), name


def test_requirement_templates_only_include_the_locks() -> None:
    backend = REPO / "template" / "backend"
    for name in LOCK.LOCK_FILES:
        expected = '{% include "locks/" ~ lock_variant ~ "/' + name + '" %}'
        assert (backend / f"{name}.jinja").read_text() == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendering_ships_the_lock_byte_for_byte(render: Renderer, variant: str) -> None:
    database, task_queue = LOCK.VARIANTS[variant]
    project = render(database=database, task_queue=task_queue)
    for name in LOCK.LOCK_FILES:
        rendered = (project / "backend" / name).read_bytes()
        assert rendered == (REPO / "locks" / variant / name).read_bytes(), name
