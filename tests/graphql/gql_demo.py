"""The real demo backends on loopback: the monolith and the three services, seeded and backfilled.

The databases are built once per test session (seed + migrations + backfill,
a few seconds) and copied per use; servers start on port 0.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from extracted_services.common.migrations import service_migrations
from extracted_services.common.registry import SERVICE_NAMES, service_spec
from extracted_services.ratings.app import create_app as create_ratings
from extracted_services.ratings.settings import RatingsSettings, Rounding
from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.migrations import MIGRATIONS as MONOLITH_MIGRATIONS
from legacy_monolith.seed import SeedPlan, load
from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.backfill import backfill
from strangler_proxy.migrate import upgrade

DEMO_PLAN = SeedPlan(titles=40, seed=7)
# Every field each service can take over from the monolith.
SERVICE_FIELDS = {
    "ratings": ("Title.rating",),
    "credits": ("Title.cast", "Person.knownFor"),
    "images": ("Title.images",),
}


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def build_databases(directory: Path) -> None:
    """monolith.sqlite3 seeded, and one backfilled database per service."""
    mono = sqlite_url(directory / "monolith.sqlite3")
    await upgrade(MONOLITH_MIGRATIONS, mono)
    src = make_engine(mono)
    try:
        async with src.begin() as conn:
            await load(conn, DEMO_PLAN)
        for name in SERVICE_NAMES:
            url = sqlite_url(directory / f"{name}.sqlite3")
            await upgrade(service_migrations(name), url)
            dst = make_engine(url)
            try:
                await backfill(service_spec(name).datamove.backfill, src, dst)
            finally:
                await dst.dispose()
    finally:
        await src.dispose()


def copy_databases(template: Path, directory: Path) -> dict[str, str]:
    out = {}
    for name in ("monolith", *SERVICE_NAMES):
        dst = directory / f"{name}.sqlite3"
        shutil.copyfile(template / f"{name}.sqlite3", dst)
        out[name] = sqlite_url(dst)
    return out


def upstreams_yaml(ports: dict[str, int]) -> str:
    """The ``upstreams:`` lines of a strangler.yaml over running backends (two-space indent)."""
    return "\n".join(f'  {n}: {{url: "http://127.0.0.1:{p}"}}' for n, p in ports.items())


def backends_yaml(ports: dict[str, int]) -> str:
    """The ``graphql.backends:`` lines, one backend per upstream of the same name (four-space indent)."""
    return "\n".join(f"    {n}: {{upstream: {n}}}" for n in ports)


@dataclass
class Demo:
    """Running backends and a session; ``config(...)`` is a strangler.yaml over them."""

    ports: dict[str, int]
    session: aiohttp.ClientSession
    servers: dict[str, TestServer] = field(default_factory=dict)  # to stop one mid-test

    def config(self, extracted: tuple[str, ...] = (), mode: str = "extracted") -> StranglerConfig:
        ups, backends = upstreams_yaml(self.ports), backends_yaml(self.ports)
        owner = {f: s for s, fs in SERVICE_FIELDS.items() for f in fs}
        fields = "\n".join(f"    {f}: {{target: {owner[f]}, mode: {mode}}}" for f in extracted)
        return load_config_text(f"""
proxy: {{default_upstream: monolith}}
upstreams:
{ups}
graphql:
  enabled: true
  legacy_backend: monolith
  backends:
{backends}
  fields:{chr(10) + fields if fields else " {}"}
""")

    async def monolith(self, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
        async with self.session.post(f"http://127.0.0.1:{self.ports['monolith']}/graphql",
                                     json={"query": query, "variables": variables or {}}) as resp:
            return await resp.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def running_demo(dbs: dict[str, str]) -> AsyncIterator[Demo]:
    apps = {
        "monolith": create_monolith(dbs["monolith"]),
        "ratings": create_ratings(RatingsSettings(dbs["ratings"], Rounding.LEGACY)),
        "credits": service_spec("credits").create_app(dbs["credits"]),
        "images": service_spec("images").create_app(dbs["images"]),
    }
    servers = {n: TestServer(a, host="127.0.0.1", port=0) for n, a in apps.items()}
    for s in servers.values():
        await s.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Demo({n: s.port for n, s in servers.items()}, session, servers)  # type: ignore[misc]
    finally:
        await session.close()
        for s in servers.values():
            await s.close()


def make_template(directory: Path) -> Path:
    asyncio.run(build_databases(directory))
    return directory


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded, backfilled databases, built once (import this fixture with ``demo``)."""
    return make_template(tmp_path_factory.mktemp("gql-demo"))


@pytest.fixture
async def demo(demo_template: Path, tmp_path: Path) -> AsyncIterator[Demo]:
    """The four demo backends running over a fresh copy of the databases."""
    async with running_demo(copy_databases(demo_template, tmp_path)) as d:
        yield d
