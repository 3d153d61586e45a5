"""SwitchService on a real control database: failovers and drains persisted with their audit
rows, pushed to the runtime's endpoint board, kept across restarts, followed by replicas,
dropped (and audited) when the file no longer allows them; the migration up and down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from strangler_proxy import migrate
from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.control.state_store import Base, StateStore
from strangler_proxy.control.switches import SwitchService
from strangler_proxy.databases import make_engine
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.errors import StoreError, SwitchError
from strangler_proxy.routing.endpoints import UpstreamSwitch

from .switch_stack import zones_config

EU, US = "http://127.0.0.1:9001", "http://127.0.0.1:9002"


def _config(**kwargs: object) -> StranglerConfig:
    return load_config_text(zones_config(eu=9001, us=9002, ratings=9003, **kwargs))  # type: ignore[arg-type]


@pytest.fixture
async def switch_services(sqlite_url: str) -> AsyncIterator[Callable[..., object]]:
    """Factory of started SwitchServices (each with its own runtime and store, like a replica)."""
    made: list[tuple[SwitchService, StateStore]] = []

    async def make(config: StranglerConfig | None = None, url: str | None = None) -> SwitchService:
        store = StateStore(url or sqlite_url)
        await store.upgrade()
        service = SwitchService(ProxyRuntime(config or _config()), store)
        await service.start()
        made.append((service, store))
        return service

    yield make
    for service, store in made:
        await service.stop()
        await store.close()


def _counter(service: SwitchService, name: str, **labels: str) -> float:
    return service.runtime.registry.get_sample_value(name, labels) or 0.0


async def test_a_failover_is_persisted_audited_counted_and_reaches_the_endpoint_board(switch_services) -> None:  # type: ignore[no-untyped-def]
    s: SwitchService = await switch_services()
    outcome = await s.failover("legacy", "us-east", who="ops", reason="eu-west is down")
    assert outcome.changed and outcome.as_json()["from"] == "auto" and outcome.as_json()["to"] == "us-east"
    assert s.runtime.switches == {"legacy": UpstreamSwitch(pinned_zone="us-east")}
    assert s.runtime.endpoints.switch("legacy") == UpstreamSwitch(pinned_zone="us-east")
    assert (await s.store.switches())["legacy"].pinned_zone == "us-east"
    [entry] = await s.store.audit(name="upstream:legacy")
    assert (entry.kind, entry.who, entry.from_mode, entry.to_mode, entry.reason) == (
        "failover", "ops", "auto", "us-east", "eu-west is down")
    assert _counter(s, "strangler_failovers_total", upstream="legacy", zone="us-east") == 1.0

    # Asking again changes nothing and audits nothing.
    again = await s.failover("legacy", "us-east", who="ops")
    assert not again.changed and len(await s.store.audit()) == 1

    # --auto: health decides again; the row goes.
    back = await s.failover("legacy", None, who="robot", reason="eu-west is back")
    assert back.changed and s.runtime.switches == {} and await s.store.switches() == {}
    assert s.runtime.endpoints.switch("legacy") == UpstreamSwitch()
    assert [e.to_mode for e in await s.store.audit()] == ["auto", "us-east"]
    assert _counter(s, "strangler_failovers_total", upstream="legacy", zone="auto") == 1.0


async def test_refusals_change_nothing(switch_services) -> None:  # type: ignore[no-untyped-def]
    s: SwitchService = await switch_services()
    for call, message in (
        (s.failover("legacy", "mars", who="ops"), "no endpoint in zone 'mars' (zones: eu-west, us-east)"),
        (s.failover("nope", "eu-west", who="ops"), "no such upstream"),
        (s.drain("legacy", "http://127.0.0.1:1", who="ops"), "no endpoint http://127.0.0.1:1"),
        (s.drain("ratings", "0", who="ops"), "last endpoint that is not drained"),
    ):
        with pytest.raises(SwitchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            await call
    assert await s.store.switches() == {} and await s.store.audit() == [] and s.runtime.switches == {}


async def test_drain_and_undrain_name_the_endpoint_and_the_board_gets_its_url(switch_services) -> None:  # type: ignore[no-untyped-def]
    s: SwitchService = await switch_services()
    drained = await s.drain("legacy", "us-east", who="ops", reason="patching")  # the zone's one endpoint
    assert (drained.endpoint, drained.zone, drained.changed) == (US, "us-east", True)
    assert s.runtime.endpoints.switch("legacy").drained == {US}
    with pytest.raises(SwitchError, match="last endpoint"):
        await s.drain("legacy", "0", who="ops")
    # Pinned to the drained endpoint's zone: refused, and the other way round.
    with pytest.raises(SwitchError, match="every endpoint in zone 'us-east' is drained"):
        await s.failover("legacy", "us-east", who="ops")
    undrained = await s.undrain("legacy", US + "/", who="ops", reason="patched")
    assert undrained.changed and s.runtime.switches == {}
    entries = await s.store.audit(name="upstream:legacy")
    assert [(e.kind, e.from_mode, e.to_mode, (e.details or {}).get("endpoint")) for e in entries] == [
        ("undrain", "drained", "serving", US), ("drain", "serving", "drained", US)]
    assert _counter(s, "strangler_drains_total", upstream="legacy", action="drain") == 1.0
    assert _counter(s, "strangler_drains_total", upstream="legacy", action="undrain") == 1.0


async def test_switches_survive_a_restart_and_a_changed_file_drops_what_it_no_longer_allows(
    switch_services, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    first: SwitchService = await switch_services()
    await first.failover("legacy", "us-east", who="ops")
    await first.drain("legacy", EU, who="ops")
    await first.stop()

    again: SwitchService = await switch_services()
    assert again.runtime.switches == {"legacy": UpstreamSwitch("us-east", frozenset({EU}))}
    assert again.runtime.endpoints.switch("legacy").pinned_zone == "us-east"
    await again.stop()

    # Started with a file that moved us-east's endpoint to another zone: the pin goes (audited),
    # the drain stays.
    moved = """  legacy:
    endpoints:
      - {url: "http://127.0.0.1:9001", zone: eu-west}
      - {url: "http://127.0.0.1:9002", zone: us-west}
"""
    third: SwitchService = await switch_services(_config(legacy=moved))
    assert third.runtime.switches == {"legacy": UpstreamSwitch(None, frozenset({EU}))}
    [dropped, *_] = await third.store.audit(name="upstream:legacy")
    assert (dropped.who, dropped.kind, dropped.from_mode, dropped.to_mode) == ("file", "file", "us-east", "auto")
    assert "no endpoint in zone 'us-east'" in dropped.reason
    stored = (await third.store.switches())["legacy"]
    assert (stored.pinned_zone, stored.drained, stored.updated_by) == (None, (EU,), "file")

    # A reload to a file without the drained endpoint drops the drain too; the row goes.
    third.runtime.apply(config=_config(legacy='  legacy: {url: "http://127.0.0.1:9002"}\n'))
    drafts = await third.reload(third.runtime.config)
    assert [(d.from_mode, d.to_mode, d.details["endpoint"]) for d in drafts] == [("drained", "removed", EU)]
    assert third.runtime.switches == {} and await third.store.switches() == {}


async def test_a_replica_follows_and_concurrent_changes_lose_nothing(switch_services) -> None:  # type: ignore[no-untyped-def]
    a: SwitchService = await switch_services()
    b: SwitchService = await switch_services()
    await a.failover("legacy", "eu-west", who="ops")
    assert b.runtime.switches == {}
    assert await b.poll_once() and b.runtime.switches == {"legacy": UpstreamSwitch(pinned_zone="eu-west")}
    assert not await b.poll_once()

    # b has not seen a's next change; its own is written against a fresh read, never over it.
    await a.drain("legacy", US, who="ops")
    with pytest.raises(SwitchError, match="every endpoint in zone 'us-east' is drained"):
        await b.failover("legacy", "us-east", who="robot")  # decided on a's drain after the conflict
    outcome = await b.failover("legacy", None, who="robot")
    assert outcome.before == UpstreamSwitch("eu-west", frozenset({US}))
    await a.poll_once()
    assert a.runtime.switches == b.runtime.switches == {"legacy": UpstreamSwitch(None, frozenset({US}))}
    entries = await a.store.audit(name="upstream:legacy")
    assert [(e.kind, e.from_mode, e.to_mode) for e in entries] == [
        ("failover", "eu-west", "auto"), ("drain", "serving", "drained"), ("failover", "auto", "eu-west")]

    # At the same time on both: both apply, in some order, each from the other's result.
    await asyncio.gather(a.failover("legacy", "eu-west", who="ops"), b.undrain("legacy", US, who="robot"))
    await a.poll_once()
    await b.poll_once()
    assert a.runtime.switches == b.runtime.switches == {"legacy": UpstreamSwitch(pinned_zone="eu-west")}


async def test_a_failing_control_database_changes_nothing(switch_services) -> None:  # type: ignore[no-untyped-def]
    s: SwitchService = await switch_services()
    async with s.store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE upstream_switch"))
    with pytest.raises(StoreError, match="upstream_switch"):
        await s.failover("legacy", "us-east", who="ops")
    assert s.runtime.switches == {} and s.runtime.endpoints.switch("legacy") == UpstreamSwitch()


async def test_the_migration_goes_up_and_down_on_sqlite(sqlite_url: str) -> None:
    await _up_and_down(sqlite_url)


@pytest.mark.postgres
async def test_the_migration_goes_up_and_down_on_postgresql(pg_database) -> None:  # type: ignore[no-untyped-def]
    await _up_and_down(await pg_database())


async def _up_and_down(url: str) -> None:
    await migrate.upgrade(migrate.CONTROL, url)
    engine = make_engine(url)

    def columns(c, table):  # type: ignore[no-untyped-def]
        return {col["name"]: col for col in inspect(c).get_columns(table)}

    try:
        async with engine.connect() as conn:
            assert "upstream_switch" in await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            audit = await conn.run_sync(columns, "flip_audit")
            assert audit["to_mode"]["type"].length == 200  # zone names fit
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"version_table": "alembic_version_control"}), Base.metadata))
            assert diff == []
        store = StateStore(url)
        zone = "a-zone-name-longer-than-twenty-characters"
        s = SwitchService(ProxyRuntime(_config(legacy=f'  legacy: {{endpoints: [{{url: "{EU}", zone: {zone}}}]}}\n')),
                          store)
        await s.start()
        await s.failover("legacy", zone, who="ops")
        await s.stop()
        await store.close()

        await migrate.downgrade(migrate.CONTROL, url, "control_0001")
        async with engine.connect() as conn:
            assert "upstream_switch" not in await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert (await conn.run_sync(columns, "flip_audit"))["to_mode"]["type"].length == 20
            kept = (await conn.execute(text("SELECT to_mode FROM flip_audit"))).scalars().all()
            assert kept == [zone[:20]]  # the audit row stays, cut to fit
        await migrate.upgrade(migrate.CONTROL, url)
        async with engine.connect() as conn:
            assert "upstream_switch" in await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
