"""Results store throughput: shadow results per second through ResultWriter,
end to end to disk (observe -> batch -> aggregate -> commit).

    .venv/bin/python bench/store_bench.py            # SQLite, then PostgreSQL if reachable
    .venv/bin/python bench/store_bench.py --results 50000

The mix is realistic for a migration in progress: 90 % matches, 7 %
mismatches over a handful of paths, 2 % candidate errors, 1 % skipped, 20
keys, timestamps spread over ten minutes. PostgreSQL runs on a temporary
database on 127.0.0.1:5432 (user postgres) that is dropped afterwards.
SQLite must reach MIN_SQLITE_RATE or the script exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from strangler_proxy import migrate
from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult, Verdict
from strangler_proxy.store import ResultWriter

MIN_SQLITE_RATE = 5_000  # results per second
DEFAULT_RESULTS = 100_000
FEED_SLICE = 100  # results observed between two yields to the event loop
PG_ADMIN_DSN = os.environ.get("STRANGLER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
KEYS = [f"route-{i}" for i in range(16)] + [f"graphql:Type{i}.field" for i in range(4)]
PATHS = ["$.rating", "$.cast[0].name", "$.images[2].url", "$.generated_at", "$.items[7].title"]
BODY = b'{"title_id": "tt0000001", "average_rating": 7.25, "num_votes": 1234, "cast": [{"name": "Ann"}]}'


def make_results(n: int, seed: int = 1) -> list[ShadowResult]:
    rng = random.Random(seed)
    t0 = time.time()
    out = []
    for i in range(n):
        roll = rng.random()
        verdict = (
            Verdict.MATCH if roll < 0.90 else Verdict.MISMATCH if roll < 0.97 else
            Verdict.CANDIDATE_ERROR if roll < 0.99 else Verdict.SKIPPED
        )
        diffs = ()
        if verdict is Verdict.MISMATCH:
            diffs = (Difference(DiffKind.VALUE, rng.choice(PATHS), 1, 2),)
        out.append(
            ShadowResult(
                key=rng.choice(KEYS),
                mode="shadow",
                verdict=verdict,
                at=t0 + 600 * i / n,
                legacy_status=200,
                candidate_status=500 if verdict is Verdict.CANDIDATE_ERROR else 200,
                legacy_latency_s=rng.lognormvariate(-4.5, 0.5),
                candidate_latency_s=rng.lognormvariate(-4.4, 0.6),
                differences=diffs,
                method="GET",
                target="/api/titles/tt0000001",
                legacy_body=BODY if verdict is not Verdict.MATCH else None,
                candidate_body=BODY if verdict is not Verdict.MATCH else None,
                extra={"request_headers": [["Authorization", "Bearer x"]]},
            )
        )
    return out


async def run_writer(url: str, results: list[ShadowResult]) -> tuple[float, dict[str, int]]:
    """Feed results as the shadow path would (in slices, yielding to the
    loop) and time until everything is committed."""
    await migrate.upgrade(migrate.RESULTS, url)
    engine = make_engine(url)
    writer = ResultWriter(engine, StoreSettings(), max_buffer=len(results) + 1)
    await writer.start()
    started = time.perf_counter()
    for i in range(0, len(results), FEED_SLICE):
        for r in results[i : i + FEED_SLICE]:
            writer.observe(r)
        await asyncio.sleep(0)
    await writer.close()  # final flush: everything is on disk when this returns
    elapsed = time.perf_counter() - started
    await engine.dispose()
    assert writer.stats.written == len(results), writer.stats
    stats = {"written": writer.stats.written, "dropped": writer.stats.dropped, "flushes": writer.stats.flushes}
    return elapsed, stats


async def bench_sqlite(results: list[ShadowResult]) -> float:
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'control.sqlite3'}"
        elapsed, stats = await run_writer(url, results)
    rate = len(results) / elapsed
    print(f"sqlite:     {len(results):>7} results in {elapsed:6.2f} s = {rate:>9,.0f}/s  {stats}")
    return rate


async def bench_postgres(results: list[ShadowResult]) -> float | None:
    name = f"strangler_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"postgresql: skipped, unreachable at {PG_ADMIN_DSN}: {exc}")
        return None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
        elapsed, stats = await run_writer(url, results)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    rate = len(results) / elapsed
    print(f"postgresql: {len(results):>7} results in {elapsed:6.2f} s = {rate:>9,.0f}/s  {stats}")
    return rate


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=DEFAULT_RESULTS)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = make_results(args.results)
    sqlite_rate = await bench_sqlite(results)
    if not args.no_postgres:
        await bench_postgres(results)
    if sqlite_rate < MIN_SQLITE_RATE:
        print(f"FAIL: SQLite wrote {sqlite_rate:,.0f}/s, below the {MIN_SQLITE_RATE:,}/s target")
        return 1
    print(f"OK: SQLite above {MIN_SQLITE_RATE:,}/s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
