"""Alembic environment of the ``credits`` service database
(version table ``alembic_version_credits``; see extracted_services/common/alembic_env.py)."""

from extracted_services.common.alembic_env import run_environment
from extracted_services.credits.models import metadata

run_environment("credits", metadata)
