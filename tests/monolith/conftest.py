"""Fixtures of the monolith tests: a seeded SQLite catalogue and a live server.

Seeding once per session and copying the file per test keeps each test's
database private (tests write votes) while costing milliseconds.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from legacy_monolith.app import create_app
from legacy_monolith.seed import SeedPlan, seed_database
from strangler_proxy.stack.runners import Site

TEST_PLAN = SeedPlan(titles=300, seed=7)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "monolith.sqlite3"
    asyncio.run(seed_database(sqlite_url(path), TEST_PLAN))
    return path


@pytest.fixture
def monolith_url(seeded_template: Path, tmp_path: Path) -> str:
    """A private copy of the seeded catalogue; its SQLAlchemy URL."""
    path = tmp_path / "monolith.sqlite3"
    shutil.copyfile(seeded_template, path)
    return sqlite_url(path)


@dataclass(frozen=True)
class Live:
    """A running monolith and a client session pointed at it."""

    base: str
    http: aiohttp.ClientSession
    database_url: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
async def live(monolith_url: str) -> AsyncIterator[Live]:
    server = Site(create_app(monolith_url), "127.0.0.1", 0)
    base = await server.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        yield Live(base, http, monolith_url)
    await server.stop()
