"""Fixtures of the control-plane tests: config files, state stores, flip services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.control.flips import FlipService
from strangler_proxy.control.state_store import StateStore
from strangler_proxy.dataplane.runtime import ProxyRuntime

ADMIN_TOKEN = "test-admin-token"

BASE_CONFIG = """
proxy:
  admin_tokens: {{ops: "{token}", robot: "robot-token"}}
  state_poll_interval_s: 0.1
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy_port}"}}
  ratings: {{url: "http://127.0.0.1:{target_port}"}}
routes:
  - name: ratings
    path: /api/titles/{{id}}/ratings
    methods: [GET]
    target: ratings
    mode: {ratings_mode}
    percent: {ratings_percent}
    partition_key: path:id
{ratings_extra}  - name: cast
    path: /api/titles/{{id}}/cast
    target: ratings
graphql:
  backends:
    legacy: {{upstream: legacy}}
    ratings: {{upstream: ratings}}
  fields:
    Title.rating: {{target: ratings}}
"""


def config_text(
    *, ratings_mode: str = "shadow", ratings_percent: float = 0, legacy_port: int = 9, target_port: int = 9,
    extra: str = "", ratings_extra: str = "",
) -> str:
    return BASE_CONFIG.format(
        token=ADMIN_TOKEN, ratings_extra=ratings_extra, ratings_mode=ratings_mode, ratings_percent=ratings_percent, legacy_port=legacy_port,
        target_port=target_port,
    ) + extra


def make_config(**kwargs: object) -> StranglerConfig:
    return load_config_text(config_text(**kwargs))  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"


ServiceFactory = Callable[..., "FlipService"]


@pytest.fixture
async def services(sqlite_url: str) -> AsyncIterator[Callable[..., object]]:
    """Factory of started FlipServices (each with its own runtime and store); all stopped at the end."""
    made: list[tuple[FlipService, StateStore]] = []

    async def make(config: StranglerConfig, url: str | None = None) -> FlipService:
        store = StateStore(url or sqlite_url)
        await store.upgrade()
        service = FlipService(ProxyRuntime(config), store)
        await service.start()
        made.append((service, store))
        return service

    yield make
    for service, store in made:
        await service.stop()
        await store.close()


# ---------------------------------------------------------------- real servers

from dataclasses import dataclass, field  # noqa: E402

from aiohttp import web  # noqa: E402


@dataclass
class FakeUpstream:
    """A real loopback HTTP server answering the ratings/cast paths; ``failing`` makes it 500."""

    name: str
    port: int = 0
    failing: bool = False
    hits: int = 0
    paths: list[str] = field(default_factory=list)


@pytest.fixture
async def upstreams(catch_all) -> AsyncIterator[Callable[[str], object]]:  # type: ignore[no-untyped-def]
    async def make(name: str) -> FakeUpstream:
        state = FakeUpstream(name)

        async def handle(request: web.Request) -> web.Response:
            state.hits += 1
            if state.failing:
                return web.json_response({"error": {"code": "boom", "message": "failing on purpose"}}, status=500)
            # Both sides answer the same bytes, so every comparison matches.
            return web.json_response({"path": request.path, "value": 42})

        state.port = await catch_all(handle)
        return state

    yield make
