"""Alembic environment of the ``ratings`` service database
(version table ``alembic_version_ratings``; see strangler_proxy/migration_env.py)."""

from strangler_proxy.migration_env import run_environment
from extracted_services.ratings.models import metadata

run_environment("ratings", metadata)
