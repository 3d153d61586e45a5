"""The control plane: who decides what the data plane does, and who may change it.

- ``flips``        :class:`~strangler_proxy.control.flips.FlipService`: validated,
                   audited, persisted mode changes
- ``precedence``   which value is in force, the file's or a flip's (pure functions)
- ``switches``     :class:`~strangler_proxy.control.switches.SwitchService`: an
                   upstream's failover to a zone and drained endpoints, audited,
                   persisted, handed to the endpoint pools as one snapshot
- ``switch_rules`` which switches an upstream may take and a file keeps (pure functions)
- ``replicas``     replicas polling the control database for each other's flips and switches
- ``state_store``  flips, upstream switches and the audit log in the control database
- ``guardrails``   when to roll back: candidate errors or mismatches over a window
- ``readiness``    when a route or field is ready to flip (confidence bound)
- ``rollouts``     a flip moved cell by cell, wave by wave, gated (pure); ``rollout_driver``
                   runs it under a lease, ``rollout_store`` persists it
- ``reload``       the config file watched and re-applied whole, or refused whole
- ``admin``        the admin HTTP API (bearer token, loopback by default);
                   ``admin_upstreams``: its upstream calls; ``admin_cells``: /cells;
                   ``admin_rollouts``: /rollouts; ``admin_http``: the
                   error shape and request bodies they share
- ``config_view``  the running config as the admin API shows it (no secrets)
- ``plan``         what saving a config file would change (``strangler plan``; pure)
"""
