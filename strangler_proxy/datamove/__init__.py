"""Moving a service's data out of the monolith and keeping it in sync.

- ``plan``      :class:`~strangler_proxy.datamove.plan.DataMove`: what a service
                declares (which tables to copy, which outbox streams to follow)
- ``backfill``  batched, idempotent, resumable, verifiable copies
- ``sync``      :class:`~strangler_proxy.datamove.sync.SyncWorker`: an outbox
                applied in order, exactly once in effect, both directions
- ``batches``, ``upsert``  the copy and upsert machinery both share

``strangler backfill`` and ``strangler sync`` run these for the services the
stack names (stack/).
"""
