"""Fixtures of the proxy suite: raw echo upstreams and a proxy factory, all on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.dataplane.handler import ProxyRunner, start_proxy
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.result import ShadowResult
from tests.dataplane.rawhttp import RawUpstream


@dataclass
class Collector:
    results: list[ShadowResult] = field(default_factory=list)

    def observe(self, result: ShadowResult) -> None:
        self.results.append(result)


@dataclass
class Proxy:
    port: int
    runtime: ProxyRuntime
    shadow: ShadowDispatcher
    results: Collector
    runner: ProxyRunner


@pytest.fixture
async def legacy() -> AsyncIterator[RawUpstream]:
    up = await RawUpstream("legacy").start()
    yield up
    await up.stop()


@pytest.fixture
async def target() -> AsyncIterator[RawUpstream]:
    up = await RawUpstream("target").start()
    yield up
    await up.stop()


MakeProxy = Callable[..., Awaitable[Proxy]]


async def start_test_proxy(config: StranglerConfig) -> Proxy:
    """A proxy for ``config`` on a free loopback port: served path, shadow path, results collected."""
    runtime = ProxyRuntime(config)
    collector = Collector()
    dispatcher = ShadowDispatcher(config.shadow, DiffComparator(), [collector], runtime)
    await dispatcher.start()
    runner, port = await start_proxy(runtime, dispatcher, "127.0.0.1", 0)
    return Proxy(port, runtime, dispatcher, collector, runner)


async def stop_test_proxy(proxy: Proxy) -> None:
    await proxy.runner.cleanup()
    await proxy.shadow.stop()


@pytest.fixture
async def make_proxy(legacy: RawUpstream, target: RawUpstream) -> AsyncIterator[MakeProxy]:
    """``await make_proxy(routes_yaml, shadow_yaml=..., target_port=...)``."""
    made: list[Proxy] = []

    async def make(routes: str = "[]", *, shadow: str = "{}", target_port: int | None = None,
                   upstream_extra: str = "", legacy_timeout_s: float = 2) -> Proxy:
        config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy.port}", timeout_s: {legacy_timeout_s} {upstream_extra}}}
  target: {{url: "http://127.0.0.1:{target_port or target.port}", timeout_s: 2, connect_timeout_s: 1}}
shadow: {shadow}
routes: {routes}
""")
        proxy = await start_test_proxy(config)
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        await stop_test_proxy(p)
