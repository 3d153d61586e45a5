"""Alembic environment of the ``images`` service database
(version table ``alembic_version_images``; see strangler_proxy/migration_env.py)."""

from strangler_proxy.migration_env import run_environment
from extracted_services.images.models import metadata

run_environment("images", metadata)
