"""The examples in the gateway's docstrings (and the disclosure rule's) are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from strangler_proxy import disclosure
from strangler_proxy.graphql import codes, executor, metrics


@pytest.mark.parametrize("module", [codes, disclosure, executor, metrics], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0
