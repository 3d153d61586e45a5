"""Where the monolith's alembic environment lives (``migrations/monolith``)."""

from __future__ import annotations

from pathlib import Path

from strangler_proxy.migrate import migration_env

MIGRATIONS = migration_env("monolith", Path(__file__).resolve().parent.parent / "migrations" / "monolith")
