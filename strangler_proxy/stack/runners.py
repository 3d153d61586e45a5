"""Running the stack's programs inside one event loop: apps, commands, sync workers.

``strangler up``, ``strangler service``, ``strangler monolith`` and ``strangler
sync`` all use these; each has ``start() -> url`` and ``stop()``, the shape of
a :class:`~strangler_proxy.stack.components.Component`.

    server = AppServer("ratings", spec, url, host="127.0.0.1", port=8101)
    print(await server.start())   # http://127.0.0.1:8101
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from strangler_proxy import migrate
from strangler_proxy.datamove.plan import backfill_unless_done
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.errors import StranglerError
from strangler_proxy.stack.apps import AppSpec, SeedRequest

# The sync worker of a service serves /metrics on the service's port + this.
SYNC_METRICS_PORT_OFFSET = 1000
# A command app: how long it may take to answer its health path, and how often it is asked.
COMMAND_START_TIMEOUT_S = 60.0
COMMAND_POLL_S = 0.2
COMMAND_STOP_GRACE_S = 10.0


class Site:
    """One aiohttp app on one host:port (port 0: any free port)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> str:
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 was asked
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


class AppServer:
    """A Python app of the stack: its database migrated to head (seeded when
    empty, or backfilled on first start, if asked), then served."""

    def __init__(
        self,
        name: str,
        spec: AppSpec,
        database_url: str,
        *,
        host: str,
        port: int,
        migrate_first: bool = True,
        seed: SeedRequest | None = None,
        backfill_from: str | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.database_url = database_url
        self._site = Site(spec.create_app(database_url), host, port)
        self._migrate = migrate_first
        self._seed = seed
        self._backfill_from = backfill_from

    @property
    def port(self) -> int:
        return self._site.port

    async def start(self) -> str:
        if self._migrate and self.spec.migrations is not None:
            await migrate.upgrade(self.spec.migrations, self.database_url)
        if self._seed is not None and self.spec.seed is not None:
            await self.spec.seed(self.database_url, self._seed, None)
        if self._backfill_from is not None and self.spec.datamove is not None:
            await backfill_unless_done(self.spec.datamove, self._backfill_from, self.database_url)
        return await self._site.start()

    async def stop(self) -> None:
        await self._site.stop()


class CommandApp:
    """Any program of the stack (``stack.apps[].command``): started as a child
    process, up once its health URL answers 2xx, stopped with SIGTERM."""

    def __init__(self, name: str, argv: tuple[str, ...], *, host: str, port: int, health: str,
                 start_timeout_s: float = COMMAND_START_TIMEOUT_S) -> None:
        self.name = name
        self.argv = tuple(a.replace("{host}", host).replace("{port}", str(port)) for a in argv)
        self.url = f"http://{host}:{port}"
        self.health = health
        self.start_timeout_s = start_timeout_s
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The running program's process id (None before start and after stop)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> str:
        try:
            self._proc = await asyncio.create_subprocess_exec(*self.argv, start_new_session=True)
        except OSError as exc:
            raise StranglerError(f"app {self.name}: cannot run {self.argv[0]!r}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    raise StranglerError(f"app {self.name}: {self.argv[0]} exited with {self._proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + self.health) as resp:
                        if 200 <= resp.status < 300:
                            return self.url
                await asyncio.sleep(COMMAND_POLL_S)
        await self.stop()
        raise StranglerError(f"app {self.name}: {self.url}{self.health} did not answer 2xx "
                             f"within {self.start_timeout_s:.0f} s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), COMMAND_STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    return app


class SyncRunner:
    """A :class:`SyncWorker` polling in a task, plus its ``/metrics`` endpoint
    (``metrics_port`` None: no endpoint)."""

    def __init__(self, worker: SyncWorker, *, host: str = "127.0.0.1", metrics_port: int | None = None) -> None:
        self.worker = worker
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._site = Site(metrics_app(), host, metrics_port) if metrics_port is not None else None

    async def start(self) -> str:
        await self.worker.prepare()
        url = await self._site.start() + "/metrics" if self._site else "(no metrics endpoint)"
        self._task = asyncio.create_task(self.worker.run(self._stop), name=f"sync-{self.worker.service}")
        return url

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._site is not None:
            await self._site.stop()
        await self.worker.source.dispose()
        await self.worker.target.dispose()
