"""strangler: migrate a monolith to services one REST route or GraphQL field at a time.

The map of the package (docs/architecture.md has the long version), in the
order a request meets it:

- ``config``     strangler.yaml, validated once and frozen (``yaml_lines``: read with
                 each key's line; ``jsonpath``: the path syntax of its rules)
- ``dataplane/`` listener -> handler -> forwarder, and the shadow hand-off
- ``routing/``   the pure decisions: which route, which side (canary)
- ``diff/``      lifter, differ, rules, noise, redaction -> a ShadowResult
- ``store/``     results written in batches; ``report/`` renders them
- ``control/``   flips, guardrails, readiness, reload, the admin API
- ``graphql/``   the gateway: compose, plan, execute, shape, shadow fields
- ``datamove/``  backfill and outbox sync of an extracted service's data
- ``stack/``     the apps strangler.yaml names, and running them
- ``server``     assembles one running proxy replica; ``cli/`` is the ``strangler`` command
- shared: ``errors``, ``headers`` (X-Strangler-*), ``disclosure`` (who may learn which
  backend answered), ``databases``, ``migrate``, ``migration_env``, ``provision``, ``logs``,
  ``metrics``

Errors are all :class:`~strangler_proxy.errors.StranglerError` subclasses.
"""

from strangler_proxy.config import StranglerConfig, load_config
from strangler_proxy.errors import StranglerError

__all__ = ["StranglerConfig", "StranglerError", "load_config"]
