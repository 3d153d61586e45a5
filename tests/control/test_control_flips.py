"""FlipService on a real SQLite file: validation, persistence, audit, precedence."""

from __future__ import annotations

import pytest

from strangler_proxy.config import Mode, load_config_text
from strangler_proxy.errors import FlipError
from strangler_proxy.routing.router import RouteState

from .conftest import config_text, make_config


async def test_flip_is_applied_audited_and_survives_a_restart(services, sqlite_url) -> None:
    svc = await services(make_config())
    out = await svc.flip("ratings", "canary", 5, who="ops", reason="first 5%")
    assert out.changed and out.from_mode is Mode.SHADOW and out.to_percent == 5
    route = svc.runtime.table.get("ratings")
    assert (route.mode, route.percent) == (Mode.CANARY, 5.0)
    [entry] = await svc.audit()
    assert (entry.who, entry.kind, entry.from_mode, entry.to_mode, entry.to_percent, entry.reason) == (
        "ops", "flip", "shadow", "canary", 5.0, "first 5%")
    await svc.stop()

    restarted = await services(make_config())  # same database, fresh runtime: a restart
    route = restarted.runtime.table.get("ratings")
    assert (route.mode, route.percent) == (Mode.CANARY, 5.0)
    assert restarted.stored("ratings").updated_by == "ops"


@pytest.mark.parametrize(
    ("name", "mode", "percent", "message"),
    [
        ("nope", "shadow", None, "no such route or field"),
        ("ratings", "shaddow", None, "unknown mode 'shaddow'; allowed: legacy, shadow, canary, extracted"),
        ("ratings", "canary", None, "canary needs a percent"),
        ("ratings", "canary", 150, "percent 150 is outside 0..100"),
        ("ratings", "shadow", 10, "--percent applies to canary only"),
        ("Title.nope", "shadow", None, "no such route or field"),
    ],
)
async def test_bad_flips_are_refused_and_change_nothing(services, name, mode, percent, message) -> None:
    svc = await services(make_config())
    table = svc.runtime.table
    with pytest.raises(FlipError, match=message.replace("(", r"\(")):
        await svc.flip(name, mode, percent, who="ops")
    assert svc.runtime.table is table
    assert await svc.audit() == []


async def test_a_same_state_flip_is_accepted_but_not_audited(services) -> None:
    svc = await services(make_config())
    out = await svc.flip("ratings", "shadow", who="ops")
    assert not out.changed
    assert await svc.audit() == []


async def test_flip_back_to_the_file_value_hands_the_route_back_to_the_file(services) -> None:
    svc = await services(make_config())
    await svc.flip("ratings", "canary", 10, who="ops")
    out = await svc.flip("ratings", "shadow", who="ops", reason="back")
    assert out.changed and not out.overridden
    assert svc.stored("ratings") is None and "ratings" not in svc.runtime.overrides
    # ...so a later file change applies at once.
    await svc.reload(make_config(ratings_mode="legacy"))
    assert svc.runtime.table.get("ratings").mode is Mode.LEGACY


async def test_a_flip_wins_over_an_unchanged_file_value_on_reload(services) -> None:
    svc = await services(make_config())
    await svc.flip("ratings", "canary", 25, who="ops")
    # The file changes something else (the cast route's mode): the flip stays.
    changes = await svc.reload(load_config_text(config_text().replace(
        "    target: ratings\ngraphql", "    target: ratings\n    mode: shadow\ngraphql")))
    route = svc.runtime.table.get("ratings")
    assert (route.mode, route.percent) == (Mode.CANARY, 25.0)
    assert svc.runtime.table.get("cast").mode is Mode.SHADOW
    assert [(c.name, c.who, c.to_mode) for c in changes] == [("cast", "file", "shadow")]


async def test_a_changed_file_value_wins_clears_the_override_and_is_audited(services) -> None:
    svc = await services(make_config())
    await svc.flip("ratings", "canary", 25, who="ops")
    await svc.reload(make_config(ratings_mode="legacy"))
    assert svc.runtime.table.get("ratings").mode is Mode.LEGACY
    assert svc.stored("ratings") is None
    newest = (await svc.audit(name="ratings"))[0]
    assert (newest.who, newest.kind, newest.from_mode, newest.from_percent, newest.to_mode) == (
        "file", "file", "canary", 25.0, "legacy")
    assert "was shadow 0% when flipped by ops" in newest.reason


async def test_a_file_changed_while_the_proxy_was_down_wins_at_start(services) -> None:
    svc = await services(make_config())
    await svc.flip("ratings", "canary", 25, who="ops")
    await svc.stop()
    unchanged = await services(make_config())
    assert unchanged.runtime.table.get("ratings").mode is Mode.CANARY
    await unchanged.stop()
    changed = await services(make_config(ratings_mode="canary", ratings_percent=50))
    route = changed.runtime.table.get("ratings")
    assert (route.mode, route.percent) == (Mode.CANARY, 50.0)
    assert changed.stored("ratings") is None
    assert (await changed.audit(name="ratings"))[0].who == "file"


async def test_a_route_removed_from_the_file_drops_its_override(services) -> None:
    svc = await services(make_config())
    await svc.flip("cast", "shadow", who="ops")
    without_cast = config_text().replace("  - name: cast\n    path: /api/titles/{id}/cast\n    target: ratings\n", "")
    await svc.reload(load_config_text(without_cast))
    assert svc.runtime.table.get("cast") is None
    assert svc.stored("cast") is None
    assert "removed from the file" in (await svc.audit(name="cast"))[0].reason
    await svc.reload(make_config())  # it comes back with the file's mode, not the old flip
    assert svc.runtime.table.get("cast").mode is Mode.LEGACY


async def test_graphql_fields_flip_in_the_same_table(services) -> None:
    svc = await services(make_config())
    seen: list[dict[str, RouteState]] = []
    svc.add_listener(seen.append)
    assert svc.field_state("Title.rating") == RouteState(Mode.LEGACY, 0.0)
    await svc.flip("Title.rating", "canary", 10, who="ops")
    assert svc.field_state("Title.rating") == RouteState(Mode.CANARY, 10.0)
    assert "Title.rating" not in svc.runtime.overrides  # the route table only holds routes
    assert seen[-1] == {"Title.rating": RouteState(Mode.CANARY, 10.0)}
    assert svc.field_state("ratings") is None


async def test_rollback_target_is_the_mode_before_entering_canary_or_extracted(services) -> None:
    svc = await services(make_config(ratings_mode="legacy"))
    assert await svc.rollback_target("ratings") == RouteState(Mode.LEGACY, 0.0)  # from the file
    await svc.flip("ratings", "shadow", who="ops")
    await svc.flip("ratings", "canary", 5, who="ops")
    await svc.flip("ratings", "canary", 50, who="ops")
    await svc.flip("ratings", "extracted", who="ops")
    assert await svc.rollback_target("ratings") == RouteState(Mode.SHADOW, 0.0)
