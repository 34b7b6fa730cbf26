"""The mutation list of `make mutations` stays honest as the template changes: every
breakage still applies, and its catch selects tests that pytest collects."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from types import ModuleType

import pytest

from conftest import REPO


def load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutations", REPO / "scripts" / "mutations.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


MUTATIONS = load_harness().load()


class Collector:
    """The node ids a pytest run selects (after -k, -m and the like), without running them."""

    def __init__(self) -> None:
        self.node_ids: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.node_ids = [item.nodeid for item in session.items]


def collected(*arguments: str) -> list[str]:
    """What `pytest ARGUMENTS` would run from the repository's root, as `make mutations`
    runs a catch. In this process: its test modules are imported already, so collecting
    is cheap."""
    collector = Collector()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        status = pytest.main(
            ["--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *arguments],
            plugins=[collector],
        )
    assert status in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), arguments
    return collector.node_ids


def node_ids(selection: list[str]) -> list[str]:
    return [argument for argument in selection if "::" in argument]


@pytest.fixture(scope="module")
def collected_ids() -> set[str]:
    """Every test of the files that the catches name by node id, collected at once."""
    selections = [shlex.split(mutation.catch) for mutation in MUTATIONS]
    files = {node.split("::")[0] for selection in selections for node in node_ids(selection)}
    return set(collected(*sorted(files)))


def test_at_least_25_breakages() -> None:
    assert len(MUTATIONS) >= 25


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda mutation: mutation.name)
def test_breakage_applies_and_its_catch_selects_collected_tests(mutation, collected_ids) -> None:
    assert mutation.find in (REPO / mutation.file).read_text(), mutation.file
    assert mutation.find != mutation.replace
    selection = shlex.split(mutation.catch)
    if node_ids(selection) == selection:
        missing = set(selection) - collected_ids
        assert not missing, f"not collected: {sorted(missing)}"
    else:
        # Files and options such as -k: pytest itself decides what they select.
        assert collected(*selection), mutation.catch
