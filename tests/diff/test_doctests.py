"""The examples in the diff engine's docstrings are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from strangler_proxy import jsonpath
from strangler_proxy.diff import comparator, differ, lifter, noise, recheck, redaction, rules


@pytest.mark.parametrize("module", [comparator, differ, jsonpath, lifter, noise, recheck, redaction, rules], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0
