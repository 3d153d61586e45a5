"""Backfill throughput on SQLite: how many ``votes`` rows a second
``strangler backfill ratings`` copies.

Seeds a fresh monolith database with N votes (rows generated directly and
inserted with ``executemany``; titles only as many as the votes need), then
backfills the ratings service from it and prints the figure for the votes
table -- the target is at least 50,000 rows per second -- and verifies the
copy.

    .venv/bin/python bench/backfill_bench.py --votes 200000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from extracted_services.common.migrations import service_migrations
from extracted_services.common.registry import service_spec
from legacy_monolith import models
from legacy_monolith.migrations import MIGRATIONS as MONOLITH_MIGRATIONS
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.backfill import backfill, verify
from strangler_proxy.migrate import upgrade

DEFAULT_VOTES = 200_000
VOTES_PER_TITLE = 20
TARGET_ROWS_PER_S = 50_000
EPOCH = datetime(2020, 1, 1)


async def seed(url: str, votes: int) -> None:
    await upgrade(MONOLITH_MIGRATIONS, url)
    rng = random.Random(1)
    n_titles = max(1, votes // VOTES_PER_TITLE)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(models.titles),
                [
                    {"id": f"tt{i:07d}", "primary_title": f"Title {i}", "original_title": f"Title {i}",
                     "kind": "movie", "start_year": 2000, "end_year": None, "runtime_minutes": 90, "genres": "Drama"}
                    for i in range(1, n_titles + 1)
                ],
            )
            for start in range(0, votes, 50_000):
                await conn.execute(
                    insert(models.votes),
                    [
                        {"title_id": f"tt{i // VOTES_PER_TITLE + 1:07d}", "user_id": f"u{i}",
                         "value": rng.randint(1, 10), "created_at": EPOCH + timedelta(seconds=i)}
                        for i in range(start, min(votes, start + 50_000))
                    ],
                )
    finally:
        await engine.dispose()


async def main(votes: int, batch_size: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        mono_url = f"sqlite+aiosqlite:///{Path(tmp) / 'monolith.sqlite3'}"
        svc_url = f"sqlite+aiosqlite:///{Path(tmp) / 'ratings.sqlite3'}"
        t0 = time.perf_counter()
        await seed(mono_url, votes)
        print(f"seeded {votes:,} votes in {time.perf_counter() - t0:.1f}s")
        await upgrade(service_migrations("ratings"), svc_url)
        spec = service_spec("ratings")
        src, dst = make_engine(mono_url), make_engine(svc_url)
        try:
            reports = await backfill(spec.datamove.backfill, src, dst, batch_size=batch_size)
            for r in reports:
                print(f"{r.table:>8}: {r.rows:>9,} rows in {r.seconds:6.2f}s = {r.rows_per_second:>9,.0f} rows/s")
            checks = await verify(spec.datamove.backfill, src, dst)
        finally:
            await src.dispose()
            await dst.dispose()
        vote_rate = next(r for r in reports if r.table == "votes").rows_per_second
        ok = all(c.ok for c in checks)
        print(f"votes backfill: {vote_rate:,.0f} rows/s (target >= {TARGET_ROWS_PER_S:,}); verify {'ok' if ok else 'FAILED'}")
        return 0 if ok and vote_rate >= TARGET_ROWS_PER_S else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=DEFAULT_VOTES)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.votes, args.batch_size)))
