"""Per-cell modes: a cell follows its route until flipped on its own; its flips are audited and its
guardrails roll back that cell only."""

from __future__ import annotations

import asyncio

import pytest

from strangler_proxy.config import Mode, load_config_text
from strangler_proxy.control.flips import FlipService
from strangler_proxy.control.guardrails import Guardrails
from strangler_proxy.control.precedence import reconcile
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.errors import FlipError

CELLS = """
upstreams: {{legacy: {{}}, ratings: {{}}}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: reviews, path: "/api/titles/{{id}}/reviews", methods: [GET, POST], target: ratings, mode: shadow,
     shadow_writes: dry-run}}
guardrails: {{min_samples: 10, window: 50, window_s: 60, max_error_rate: 0.2, max_mismatch_rate: 0.2}}
cells:
  partition_key: header:X-Tenant
  cells:
{cells}"""


def cells_text(names: tuple[str, ...] = ("c1", "c2", "c3")) -> str:
    listed = "".join(f'    - {{name: {n}, upstreams: {{legacy: "http://127.0.0.1:{9000 + i}", '
                      f'ratings: "http://127.0.0.1:{9100 + i}"}}}}\n' for i, n in enumerate(names))
    return CELLS.format(cells=listed)


async def test_a_cell_follows_its_route_until_flipped_on_its_own(services) -> None:
    svc: FlipService = await services(load_config_text(cells_text()))
    out = await svc.flip("ratings@c2", "extracted", who="ops", reason="c2 first")
    assert out.changed and out.overridden
    tables = svc.runtime.snapshot.tables
    assert tables.for_cell("c2").get("ratings").mode is Mode.EXTRACTED
    assert tables.for_cell("c1").get("ratings").mode is Mode.SHADOW
    # A global flip moves every cell without an override of its own.
    await svc.flip("ratings", "canary", 10, who="ops")
    tables = svc.runtime.snapshot.tables
    assert (tables.for_cell("c1").get("ratings").mode, tables.for_cell("c1").get("ratings").percent) == (
        Mode.CANARY, 10.0)
    assert tables.for_cell("c2").get("ratings").mode is Mode.EXTRACTED
    assert svc.state("ratings@c3") == svc.state("ratings")
    # Flipping the cell to what its route says clears its override: it follows the route again.
    back = await svc.flip("ratings@c2", "canary", 10, who="ops")
    assert back.changed and not back.overridden
    assert svc.stored("ratings@c2") is None
    audit = await svc.audit(name="ratings@c2")
    assert [(a.from_mode, a.to_mode) for a in audit] == [("extracted", "canary"), ("shadow", "extracted")]


async def test_per_cell_flips_are_refused_for_unknown_cells_and_keep_the_write_rule(services) -> None:
    svc: FlipService = await services(load_config_text(cells_text()))
    with pytest.raises(FlipError, match="no such cell 'c9'"):
        await svc.flip("ratings@c9", "extracted", who="ops")
    with pytest.raises(FlipError, match="canary splits the writes"):
        await svc.flip("reviews@c1", "canary", 5, who="ops")
    assert svc.runtime.snapshot.tables.by_cell == {}


async def test_a_removed_cell_drops_its_overrides(services) -> None:
    svc: FlipService = await services(load_config_text(cells_text()))
    await svc.flip("ratings@c3", "extracted", who="ops")
    smaller = load_config_text(cells_text(("c1", "c2")))
    result = reconcile(smaller, svc._stored)
    assert [(o.name, why) for o, why in result.dropped] == [
        ("ratings@c3", "cell 'c3' was removed from the file; its override is dropped")]
    await svc.reload(smaller)
    assert svc.stored("ratings@c3") is None


async def test_a_failing_candidate_in_one_cell_rolls_back_that_cell_only(services) -> None:
    svc: FlipService = await services(load_config_text(cells_text()))
    await svc.flip("ratings", "canary", 50, who="ops")
    guard = Guardrails(svc)
    guard.start()
    try:
        for _ in range(12):
            guard.observe(ShadowResult(key="ratings@c2", mode="canary", verdict=Verdict.CANDIDATE_ERROR, at=0.0))
            guard.observe(ShadowResult(key="ratings@c1", mode="canary", verdict=Verdict.MATCH, at=0.0))
        for _ in range(100):
            if svc.stored("ratings@c2") is not None:
                break
            await asyncio.sleep(0.02)
        assert svc.state("ratings@c2").mode is Mode.SHADOW
        assert svc.state("ratings@c1").mode is Mode.CANARY
        assert svc.state("ratings").mode is Mode.CANARY
        rollback = (await svc.audit(name="ratings@c2"))[0]
        assert (rollback.kind, rollback.who) == ("rollback", "guardrails")
        assert guard.status("ratings@c1")["state"] in ("ok", "warming up")
    finally:
        await guard.stop()
