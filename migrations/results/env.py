"""Alembic environment of the results store. Its tables live in the ``control``
database beside the flips, under their own version table
``alembic_version_results`` (see strangler_proxy/migration_env.py)."""

from strangler_proxy.migration_env import run_environment
from strangler_proxy.store.models import RESULTS_METADATA

run_environment("results", RESULTS_METADATA, database="control")
