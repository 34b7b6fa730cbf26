"""The mutation list of `make mutations` stays honest as the template changes: every
breakage still applies, and names a test set that exists."""

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


def test_at_least_25_breakages() -> None:
    assert len(MUTATIONS) >= 25


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda mutation: mutation.name)
def test_breakage_applies_and_names_a_test_file(mutation) -> None:
    assert mutation.find in (REPO / mutation.file).read_text(), mutation.file
    assert mutation.find != mutation.replace
    selection = shlex.split(mutation.catch)
    test_file = selection[0].split("::")[0]
    assert (REPO / test_file).is_file(), test_file
    if "::" in selection[0]:
        function = selection[0].split("::")[1].split("[")[0]
        assert f"def {function}(" in (REPO / test_file).read_text(), function
