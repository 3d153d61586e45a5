"""Alembic environment of the ``control`` database: flips and their audit log
(version table ``alembic_version_control``; see strangler_proxy/migration_env.py)."""

from strangler_proxy.migration_env import run_environment
from strangler_proxy.control import rollout_store  # noqa: F401 -- its tables on Base
from strangler_proxy.control.state_store import Base

run_environment("control", Base.metadata)
