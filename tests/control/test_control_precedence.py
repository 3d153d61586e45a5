"""The file-vs-flip precedence, as the pure functions the flip service and the admin API share."""

from __future__ import annotations

import doctest
from dataclasses import replace

import pytest

from strangler_proxy.config import Mode
from strangler_proxy.control import precedence
from strangler_proxy.control.precedence import effective, file_value, flip_percent, stale_override
from strangler_proxy.control.state_store import StoredOverride
from strangler_proxy.errors import FlipError
from strangler_proxy.routing.router import RouteState

from .conftest import make_config

FLIPPED = StoredOverride("ratings", "canary", 25.0, file_mode="shadow", file_percent=0.0, version=3, updated_by="ops")


def test_the_examples_hold() -> None:
    failed, attempted = doctest.testmod(precedence)
    assert attempted > 0 and failed == 0


def test_a_flip_wins_until_the_files_own_value_changes() -> None:
    config = make_config(ratings_mode="shadow")
    assert effective(config, "ratings", FLIPPED) == RouteState(Mode.CANARY, 25.0)
    assert stale_override(config, "ratings", FLIPPED) is None
    changed = make_config(ratings_mode="legacy")
    assert stale_override(changed, "ratings", FLIPPED) == (
        "the file changed it (was shadow 0% when flipped by ops)"
    )
    assert effective(config, "ratings", None) == RouteState(Mode.SHADOW, 0.0)


def test_a_name_gone_from_the_file_has_no_state_and_drops_its_override() -> None:
    config = make_config()
    assert file_value(config, "nope") is None and effective(config, "nope", replace(FLIPPED, name="nope")) is None
    assert stale_override(config, "nope", replace(FLIPPED, name="nope")) == (
        "removed from the file; its override is dropped"
    )


def test_the_percent_a_flip_sets() -> None:
    shadow, canary = RouteState(Mode.SHADOW, 0.0), RouteState(Mode.CANARY, 10.0)
    assert flip_percent("r", Mode.CANARY, 5, shadow, (Mode.SHADOW, 0.0)) == 5.0
    assert flip_percent("r", Mode.CANARY, None, canary, (Mode.SHADOW, 0.0)) == 10.0  # keep the canary's
    assert flip_percent("r", Mode.EXTRACTED, None, canary, (Mode.SHADOW, 0.0)) == 0.0  # the file's
    with pytest.raises(FlipError, match="canary needs a percent"):
        flip_percent("r", Mode.CANARY, None, shadow, (Mode.SHADOW, 0.0))
    with pytest.raises(FlipError, match="canary only"):
        flip_percent("r", Mode.EXTRACTED, 5, shadow, (Mode.SHADOW, 0.0))
    with pytest.raises(FlipError, match="outside 0..100"):
        flip_percent("r", Mode.CANARY, 101, shadow, (Mode.SHADOW, 0.0))
