"""A running proxy, assembled: config, state store, runtime, shadow path, admin API, reloads.

:class:`ProxyServer` is the one place that wires the parts together (tests and
``strangler up`` use it; ``strangler proxy`` runs :func:`run_proxy`):

1. ``strangler.yaml`` is loaded and validated (a bad file never starts);
2. the control database is migrated and the persisted flips and upstream
   switches (failover pins, drained endpoints) are applied (a file value
   changed since a flip wins; a switch the file no longer allows is dropped
   -- see docs/operations.md);
3. the shadow dispatcher starts with the comparator and the result listeners
   (:func:`comparator_for` and :func:`result_listeners`), guardrails last;
4. the admin API binds (refusing a non-loopback address without a token), then
   the proxy port;
5. the config file is watched (and SIGHUP reloads it in :func:`run_proxy`).

    >>> async with ProxyServer("strangler.yaml", port=0, admin_port=0) as server:  # doctest: +SKIP
    ...     print(server.url, server.admin_url)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from strangler_proxy import migrate
from strangler_proxy.config import CompareConfig, StranglerConfig, load_config
from strangler_proxy.control.admin import AdminContext, start_admin
from strangler_proxy.control.admin_upstreams import board_stats
from strangler_proxy.control.flips import FlipService
from strangler_proxy.control.guardrails import Guardrails
from strangler_proxy.control.reload import DEFAULT_WATCH_INTERVAL_S, ConfigReloader
from strangler_proxy.control.rollout_driver import RolloutDriver
from strangler_proxy.control.rollout_store import RolloutStore
from strangler_proxy.control.state_store import StateStore
from strangler_proxy.control.switches import SwitchService
from strangler_proxy.control.worker_group import WorkerPeers, WorkerSpec
from strangler_proxy.databases import make_engine
from strangler_proxy.dataplane.handler import ProxyHandler, start_proxy
from strangler_proxy.dataplane.pool import Upstreams
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import Comparator, DiffComparator
from strangler_proxy.diff.noise import NoiseModel
from strangler_proxy.diff.redaction import redactions_for
from strangler_proxy.diff.result import ResultListener
from strangler_proxy.errors import BackendSDLUnavailable, GraphQLGatewayError
from strangler_proxy.graphql.gateway import GraphQLGateway
from strangler_proxy.graphql.ownership import Ownership
from strangler_proxy.routing.router import RouteState
from strangler_proxy.store import ResultWriter

log = logging.getLogger("strangler.server")

# The gateway's session for the backends' SDL at start-up (fetches go through endpoint pools).
GRAPHQL_CONNECTIONS = 256
GRAPHQL_RECOMPOSE_S = 5.0  # started without its gateway: how often to try composing again


# --------------------------------------------------------------------------
# THE PLUG-IN POINT: the comparator and the result listeners of the shadow
# path. The diff engine's DiffComparator and the results-store writer go here
# (and nowhere else); guardrails are added by ProxyServer itself.
# --------------------------------------------------------------------------


def comparator_for(config: StranglerConfig) -> Comparator:
    """The comparator every shadow pair goes through: the diff engine, with a
    learned-noise model shared by every route and field of this replica."""
    return DiffComparator(noise=NoiseModel(), sample_body_limit=config.store.body_limit)


async def result_listeners(config: StranglerConfig, stack: AsyncExitStack, url: str) -> list[ResultListener]:
    """Listeners that receive every result; register their cleanup on ``stack``.
    ``url`` is the control database (results share it with flips)."""
    await migrate.upgrade(migrate.RESULTS, url)
    writer = ResultWriter(make_engine(url), config.store, redaction=redactions_for(config), owns_engine=True)
    await writer.start()
    stack.push_async_callback(writer.close)
    return [writer]


# --------------------------------------------------------------------------


class ProxyServer:
    """A whole proxy replica as an async context manager.

    ``port``/``admin_port`` override the file (0 = any free port); the bound
    ones are :attr:`port` and :attr:`admin_port` once entered.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        port: int | None = None,
        admin_port: int | None = None,
        host: str | None = None,
        admin_host: str | None = None,
        state_url: str | None = None,
        watch: bool = True,
        watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S,
        sighup: bool = False,
        worker: WorkerSpec | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.worker = worker  # one of several worker processes (workers.py), or None
        self._port, self._admin_port = port, admin_port
        self._host, self._admin_host = host, admin_host
        self._state_url = state_url
        self._watch, self._watch_interval_s, self._sighup = watch, watch_interval_s, sighup
        self._stack = AsyncExitStack()
        self.port = 0
        self.admin_port = 0
        self.graphql: GraphQLGateway | None = None
        self._handler: ProxyHandler | None = None  # the running data plane, once listening
        self._graphql_pools: Upstreams | None = None  # the gateway's endpoint pools towards its backends
        self._rules_config: StranglerConfig | None = None
        self._rules: dict[str, CompareConfig] = {}
        self.host = ""
        self.admin_host = ""

    # The parts, available once entered.
    runtime: ProxyRuntime
    store: StateStore
    flips: FlipService
    switches: SwitchService
    shadow: ShadowDispatcher
    guardrails: Guardrails
    rollouts: RolloutDriver
    reloader: ConfigReloader

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"

    async def __aenter__(self) -> ProxyServer:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def start(self) -> str:
        """Start without ``async with`` (for ``strangler up`` components); returns the proxy URL."""
        await self.__aenter__()
        return self.url

    async def stop(self) -> None:
        await self._stack.aclose()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        stack = self._stack
        config = load_config(self.config_path)

        self.store = StateStore(self._state_url or config.control_database_url())
        stack.push_async_callback(self.store.close)
        await self.store.upgrade()

        self.runtime = ProxyRuntime(config)
        self.flips = FlipService(self.runtime, self.store)
        await self.flips.start()
        stack.push_async_callback(self.flips.stop)
        # Before any pool exists: the first request already sees the pins and drains.
        self.switches = SwitchService(self.runtime, self.store)
        await self.switches.start()
        stack.push_async_callback(self.switches.stop)

        listeners = await result_listeners(config, stack, self.store.url)
        self.guardrails = Guardrails(self.flips)
        self.shadow = ShadowDispatcher(config.shadow, comparator_for(config), [*listeners, self.guardrails],
                                       self.runtime)
        await self.shadow.start()
        stack.push_async_callback(self.shadow.stop)
        self.guardrails.start()
        stack.push_async_callback(self.guardrails.stop)
        # Rollouts in progress resume here; stopping gives their leases up to another replica.
        self.rollouts = RolloutDriver(self.flips, RolloutStore(self.store), guardrail_status=self.guardrails.status)
        self.rollouts.start()
        stack.push_async_callback(self.rollouts.stop)

        self.reloader = ConfigReloader(self.config_path, self.flips, interval_s=self._watch_interval_s,
                                       switches=self.switches)
        self.reloader.start(watch=self._watch, sighup=self._sighup)
        stack.push_async_callback(self.reloader.stop)

        flips = self.flips
        worker = self.worker
        peers = WorkerPeers(worker) if worker is not None else None
        if worker is not None and worker.index > 0:
            # Worker 0's admin API serves the group; this one answers it (and only it) on loopback.
            group_token = {"workers": worker.token}
            tokens = lambda: {**flips.config.admin_tokens(), **group_token}  # noqa: E731
            self._admin_host, self._admin_port = "127.0.0.1", 0
        else:
            tokens = lambda: flips.config.admin_tokens()  # noqa: E731
        ctx = AdminContext(
            flips=flips,
            tokens=tokens,
            peers=peers if worker is not None and worker.index == 0 else None,
            guardrail_status=self.guardrails.status,
            reload=self._reload,
            switches=self.switches,
            endpoint_stats=board_stats(self.runtime.endpoints, lambda: flips.config),
            rollouts=self.rollouts,
        )
        self.admin_host = self._admin_host or config.proxy.admin.host
        admin_runner, self.admin_port = await start_admin(
            ctx, self.admin_host, config.proxy.admin.port if self._admin_port is None else self._admin_port
        )
        stack.push_async_callback(admin_runner.cleanup)

        self.graphql = await self._start_graphql(config, stack)

        self.host = self._host or config.proxy.listen.host
        runner, self.port = await start_proxy(
            self.runtime,
            self.shadow,
            self.host,
            config.proxy.listen.port if self._port is None else self._port,
            graphql=self.graphql,
            limits=config.proxy.limits,  # read once: a reload does not change them
            reuse_port=worker is not None,  # the workers share the port; the kernel spreads connections
        )
        stack.push_async_callback(runner.cleanup)
        handler = runner.proxy_server.handler
        assert isinstance(handler, ProxyHandler)
        self._handler = handler
        if peers is not None:
            peers.announce(self.admin_port)  # worker 0's announcement also tells the parent it started
        log.info("proxy on %s, admin API on %s, flips in %s", self.url, self.admin_url, self.store.url)

    async def _start_graphql(self, config: StranglerConfig, stack: AsyncExitStack) -> GraphQLGateway | None:
        """Compose the backends' schemas (refusing to start on a conflict) and keep
        the field ownership in step with every flip and reload.

        A backend that gives no SDL within ``graphql.sdl_wait_s`` does not keep the proxy
        down: it starts without its gateway (the GraphQL path then goes to the legacy
        upstream untouched, like any unrouted path) and composes again every
        ``GRAPHQL_RECOMPOSE_S`` until it can."""
        if not config.graphql.enabled:
            return None
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=GRAPHQL_CONNECTIONS))
        stack.push_async_callback(session.close)
        # Backend fetches choose an endpoint of their upstream per fetch, through pools of their own
        # (connections, retry budgets) that share the proxy's endpoint health.
        self._graphql_pools = Upstreams(self.runtime.endpoints)
        stack.push_async_callback(self._graphql_pools.close)
        try:
            return await self._compose(config, session, stack, None)
        except BackendSDLUnavailable as exc:
            log.error("%s -- starting without the GraphQL gateway: %s goes to the legacy upstream untouched; "
                      "composing again every %gs", exc, config.graphql.path, GRAPHQL_RECOMPOSE_S)
        task = asyncio.create_task(self._compose_later(session, stack), name="strangler-graphql-compose")
        stack.push_async_callback(_cancel, task)
        return None

    async def _compose(self, config: StranglerConfig, session: aiohttp.ClientSession, stack: AsyncExitStack,
                       sdl_wait_s: float | None) -> GraphQLGateway:
        gateway = await GraphQLGateway.create(
            config,
            session,
            overrides=self.flips.overrides(),
            registry=self.runtime.registry,
            shadower_args={
                "comparator": self.shadow.comparator,
                "publish": self.shadow.publish,
                "rules_for": self._field_rules,
                "rechecker": self.shadow.rechecker,  # one recheck budget for REST and GraphQL
            },
            sdl_wait_s=sdl_wait_s,
            pools=self._graphql_pools,
        )
        if gateway.shadower is not None:
            stack.push_async_callback(gateway.shadower.drain)

        def follow_flips(overrides: Mapping[str, RouteState]) -> None:
            gateway.set_ownership(Ownership.build(self.runtime.config.graphql, overrides))

        self.flips.add_listener(follow_flips)
        return gateway

    async def _compose_later(self, session: aiohttp.ClientSession, stack: AsyncExitStack) -> None:
        """Until the gateway composes: try again, then mount it in the running proxy."""
        while True:
            await asyncio.sleep(GRAPHQL_RECOMPOSE_S)
            config = self.runtime.config
            if not config.graphql.enabled or self._handler is None:
                continue
            try:
                gateway = await self._compose(config, session, stack, 0.0)
            except BackendSDLUnavailable:
                continue
            except GraphQLGatewayError as exc:  # a conflict now: still forwarding; say so, keep trying
                log.error("GraphQL gateway still not started: %s", exc)
                continue
            self.graphql = self._handler.graphql = gateway
            log.info("GraphQL gateway composed: %s is answered by it from now on", config.graphql.path)
            return

    def _field_rules(self, name: str) -> CompareConfig:
        """Compare rules of a GraphQL field, merged once per config."""
        config = self.runtime.config
        if self._rules_config is not config:
            self._rules_config, self._rules = config, {}
        rules = self._rules.get(name)
        if rules is None:
            field = config.graphql.fields.get(name)
            rules = self._rules[name] = config.compare_for(field) if field is not None else config.compare
        return rules

    async def _reload(self) -> dict[str, Any]:
        return await self.reloader.reload_now(trigger="admin API")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def freeze_startup_objects() -> None:
    """Move everything built at start-up (schemas, route tables, pools, modules) out of
    the cyclic garbage collector's way. Full collections then scan only what requests
    create: measured on the GraphQL bench, they had been 16-39 ms pauses in the p99
    tail. Only for a process's entry point -- objects frozen here are never
    cycle-collected."""
    gc.collect()
    gc.freeze()


async def run_proxy(
    config_path: str | os.PathLike[str], port: int | None = None, admin_port: int | None = None,
    worker: WorkerSpec | None = None,
) -> None:
    """Run one proxy (or one worker of several) until SIGINT or SIGTERM; SIGHUP reloads the config file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ProxyServer(config_path, port=port, admin_port=admin_port, sighup=True, worker=worker) as server:
            if worker is None or worker.index == 0:
                who = "" if worker is None else f" ({worker.count} workers)"
                print(f"strangler proxy listening on {server.url}{who}; admin API on {server.admin_url}", flush=True)
            freeze_startup_objects()
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
