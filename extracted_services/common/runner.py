"""Running a service or a sync worker inside an existing event loop.

``strangler service``, ``strangler sync`` and ``strangler up`` all use these:
each has ``start() -> url`` and ``stop()``, the shape of ``strangler up``'s
components.

    server = ServiceServer(service_spec("ratings"), url, host="127.0.0.1", port=8101)
    print(await server.start())   # http://127.0.0.1:8101
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import select

from extracted_services.common.backfill import backfill
from extracted_services.common.registry import ServiceSpec
from extracted_services.common.sync import SyncWorker, mark_start
from strangler_proxy import migrate
from strangler_proxy.databases import make_engine

# The sync worker of a service serves /metrics on the service's port + this.
SYNC_METRICS_PORT_OFFSET = 1000


class _Site:
    """One aiohttp app on one host:port (port 0: any free port)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound socket tells the real port when 0 was asked
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


class ServiceServer:
    """An extracted service: its database migrated to head, then served."""

    def __init__(
        self,
        spec: ServiceSpec,
        database_url: str,
        *,
        host: str,
        port: int,
        migrate_first: bool = True,
        backfill_from: str | None = None,
    ) -> None:
        self.spec = spec
        self.database_url = database_url
        self._site = _Site(spec.create_app(database_url), host, port)
        self._migrate = migrate_first
        self._backfill_from = backfill_from

    async def start(self) -> str:
        if self._migrate:
            await migrate.upgrade(self.spec.name, self.database_url)
        if self._backfill_from is not None:
            await backfill_unless_done(self.spec, self._backfill_from, self.database_url)
        return await self._site.start()

    async def stop(self) -> None:
        await self._site.stop()


async def backfill_unless_done(spec: ServiceSpec, monolith_url: str, service_url: str) -> bool:
    """Backfill (starting the sync cursors first) unless every table of the
    plan has a finished run; True when it copied. For ``strangler up``."""
    state = spec.backfill.state
    source, target = make_engine(monolith_url), make_engine(service_url)
    try:
        async with target.connect() as conn:
            done = set(
                (await conn.execute(select(state.c.table_name).where(state.c.finished_at.is_not(None)))).scalars()
            )
        if done >= {t.name for t in spec.backfill.tables}:
            return False
        for stream in spec.streams:
            await mark_start(stream, source, target)
        await backfill(spec.backfill, source, target)
        return True
    finally:
        await source.dispose()
        await target.dispose()


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
        self._site = _Site(metrics_app(), host, metrics_port) if metrics_port is not None else None

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
