"""Alembic environment of the ``credits`` service database
(version table ``alembic_version_credits``; see strangler_proxy/migration_env.py)."""

from strangler_proxy.migration_env import run_environment
from extracted_services.credits.models import metadata

run_environment("credits", metadata)
