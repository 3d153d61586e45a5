"""Sync lag under steady traffic: the monolith is the writer, the ratings
sync worker follows its outbox, and we print the p50/p99/max lag (seconds
from an outbox row's ``created_at`` to its application). Target: p99 < 1 s.

The monolith and the worker run in this process (one event loop), the
monolith over real HTTP on loopback; votes arrive at a steady rate.

    .venv/bin/python bench/sync_lag_bench.py --rate 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from extracted_services.common.migrations import service_migrations
from extracted_services.common.registry import service_spec
from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.migrations import MIGRATIONS as MONOLITH_MIGRATIONS
from legacy_monolith.seed import SeedPlan, load
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.backfill import backfill, verify
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.migrate import upgrade

TARGET_P99_S = 1.0
SEED_TITLES = 2_000


async def traffic(base: str, rate: float, seconds: float) -> int:
    sent = 0
    interval = 1.0 / rate
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < seconds:
            tid = f"tt{sent % SEED_TITLES + 1:07d}"
            async with http.post(f"{base}/api/titles/{tid}/ratings",
                                 json={"user_id": f"bench{sent % 97}", "value": sent % 10 + 1}) as resp:
                assert resp.status in (200, 201), await resp.text()
            sent += 1
            await asyncio.sleep(max(0.0, sent * interval - (time.perf_counter() - started)))
    return sent


async def main(rate: float, seconds: float) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        mono_url = f"sqlite+aiosqlite:///{Path(tmp) / 'monolith.sqlite3'}"
        svc_url = f"sqlite+aiosqlite:///{Path(tmp) / 'ratings.sqlite3'}"
        await upgrade(MONOLITH_MIGRATIONS, mono_url)
        seed_engine = make_engine(mono_url)
        async with seed_engine.begin() as conn:
            await load(conn, SeedPlan(titles=SEED_TITLES))
        await seed_engine.dispose()
        await upgrade(service_migrations("ratings"), svc_url)
        spec = service_spec("ratings")
        src, dst = make_engine(mono_url), make_engine(svc_url)
        await backfill(spec.datamove.backfill, src, dst)

        runner = web.AppRunner(create_monolith(mono_url), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        worker = SyncWorker("ratings", spec.datamove.streams[0], src, dst)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            sent = await traffic(f"http://127.0.0.1:{port}", rate, seconds)
            await asyncio.sleep(0.5)
            stop.set()
            await task
            await worker.drain()
            ok = all(c.ok for c in await verify(spec.datamove.backfill, src, dst))
        finally:
            await runner.cleanup()
            await src.dispose()
            await dst.dispose()
        p50, p99 = worker.lag_percentile(50), worker.lag_percentile(99)
        print(f"{sent} votes at {rate:g}/s for {seconds:g}s -> {len(worker.lags)} outbox rows applied")
        print(f"sync lag: p50 {p50:.3f}s  p99 {p99:.3f}s  max {max(worker.lags):.3f}s (target p99 < {TARGET_P99_S}s); "
              f"verify {'ok' if ok else 'FAILED'}")
        return 0 if ok and p99 is not None and p99 < TARGET_P99_S else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="votes per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds)))
