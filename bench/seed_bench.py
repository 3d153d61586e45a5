"""How long seeding a large catalogue takes (the target: 100,000 titles < 60 s on SQLite).

    .venv/bin/python bench/seed_bench.py [--titles 100000] [--seed 42] [--url URL]

Seeds a fresh SQLite file in a temporary directory (or ``--url``, which must
point at an empty monolith database) and prints the rows written, the wall
time and the rows per second. Exits non-zero when over the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from legacy_monolith.seed import SeedPlan, seed_database

BUDGET_S = 60.0
DEFAULT_TITLES = 100_000


async def _run(url: str, plan: SeedPlan) -> tuple[int, dict[str, int], float]:
    started = time.perf_counter()
    stats = await seed_database(url, plan)
    elapsed = time.perf_counter() - started
    assert stats is not None
    return stats.total, stats.rows, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, default=DEFAULT_TITLES)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--url", help="an empty database to seed (default: a temporary SQLite file)")
    args = parser.parse_args()
    plan = SeedPlan(titles=args.titles, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'monolith.sqlite3'}"
        total, rows, elapsed = asyncio.run(_run(url, plan))
    for table, count in rows.items():
        print(f"  {table:<8} {count:>10,}")
    print(f"seeded {args.titles:,} titles ({total:,} rows) in {elapsed:.1f} s -- {total / elapsed:,.0f} rows/s")
    over = args.url is None and args.titles >= DEFAULT_TITLES and elapsed > BUDGET_S
    if over:
        print(f"over the budget of {BUDGET_S:.0f} s", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
