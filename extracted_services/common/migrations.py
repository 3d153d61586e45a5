"""Where each service's alembic environment lives (``migrations/<service>``)."""

from __future__ import annotations

from pathlib import Path

from strangler_proxy.migrate import MigrationEnv, migration_env

MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "migrations"


def service_migrations(name: str) -> MigrationEnv:
    """The environment of service ``name``'s own database."""
    return migration_env(name, MIGRATIONS_ROOT / name)
