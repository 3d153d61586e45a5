"""Alembic environment of the ``monolith`` database: the film catalogue
(version table ``alembic_version_monolith``; see strangler_proxy/migration_env.py)."""

from legacy_monolith.models import Base
from strangler_proxy.migration_env import run_environment

run_environment("monolith", Base.metadata)
