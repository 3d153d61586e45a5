"""Alembic environment of the ``ratings`` service database
(version table ``alembic_version_ratings``; see extracted_services/common/alembic_env.py)."""

from extracted_services.common.alembic_env import run_environment
from extracted_services.ratings.models import metadata

run_environment("ratings", metadata)
