"""The control plane: who decides what the data plane does, and who may change it.

- ``flips``        :class:`~strangler_proxy.control.flips.FlipService`: validated,
                   audited, persisted mode changes
- ``precedence``   which value is in force, the file's or a flip's (pure functions)
- ``replicas``     replicas polling the control database for each other's flips
- ``state_store``  flips and the audit log in the control database
- ``guardrails``   when to roll back: candidate errors or mismatches over a window
- ``readiness``    when a route or field is ready to flip (confidence bound)
- ``reload``       the config file watched and re-applied whole, or refused whole
- ``admin``        the admin HTTP API (bearer token, loopback by default)
- ``config_view``  the running config as the admin API shows it (no secrets)
- ``plan``         what saving a config file would change (``strangler plan``; pure)
"""
