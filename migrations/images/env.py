"""Alembic environment of the ``images`` service database
(version table ``alembic_version_images``; see extracted_services/common/alembic_env.py)."""

from extracted_services.common.alembic_env import run_environment
from extracted_services.images.models import metadata

run_environment("images", metadata)
