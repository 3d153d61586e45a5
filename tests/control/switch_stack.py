"""What the upstream-switch tests share: a file with a two-zone legacy upstream, and real
loopback endpoints that count their requests and can hold them in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ZONES_CONFIG = """
proxy:
  admin_tokens: {{ops: "{token}", robot: "robot-token"}}
  state_poll_interval_s: {poll}
upstreams:
  legacy:
    endpoints:
      - {{url: "http://127.0.0.1:{eu}", zone: eu-west}}
      - {{url: "http://127.0.0.1:{us}", zone: us-east}}
  ratings: {{url: "http://127.0.0.1:{ratings}"}}
routes:
  - name: ratings
    path: /api/titles/{{id}}/ratings
    methods: [GET]
    target: ratings
    mode: shadow
"""


def zones_config(eu: int = 9, us: int = 9, ratings: int = 9, *, poll: float = 0.1, legacy: str | None = None) -> str:
    """The file; ``legacy`` replaces the legacy upstream's block (a reload that changes it)."""
    text = ZONES_CONFIG.format(token=ADMIN_TOKEN, eu=eu, us=us, ratings=ratings, poll=poll)
    if legacy is not None:
        start = text.index("  legacy:\n")
        text = text[:start] + legacy + text[text.index("  ratings:"):]
    return text


@dataclass
class Endpoint:
    """A real loopback HTTP server: counts requests; while ``hold`` is set, keeps them in flight."""

    name: str
    port: int = 0
    hits: int = 0
    held: int = 0
    hold: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def endpoints(catch_all) -> AsyncIterator[Callable[[str], object]]:  # type: ignore[no-untyped-def]
    async def make(name: str) -> Endpoint:
        state = Endpoint(name)

        async def handle(request: web.Request) -> web.Response:
            state.hits += 1
            if state.hold:
                state.held += 1
                await state.release.wait()
            return web.json_response({"path": request.path, "served_by": name})

        state.port = await catch_all(handle)
        return state

    yield make


async def eventually(check: Callable[[], bool], *, within_s: float = 5.0, what: str = "the condition") -> float:
    """Wait until ``check()``; the seconds it took (AssertionError after ``within_s``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not check():
        if loop.time() - started > within_s:
            raise AssertionError(f"{what} did not happen within {within_s}s")
        await asyncio.sleep(0.005)
    return loop.time() - started
