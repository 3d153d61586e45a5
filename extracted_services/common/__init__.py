"""What every extracted service built with this kit shares: the app skeleton,
its own database and migrations, dry-run writes, the federation subgraph, and
the data movers (backfill, outbox sync)."""
