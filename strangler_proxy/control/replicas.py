"""Replicas in step: every proxy replica (and worker process) polls the shared
control database and applies the flips and upstream switches the others made.

Flips are written to ``route_state`` (switches to ``upstream_switch``) in the
same transaction as their audit row; a replica learns of them here within
``proxy.state_poll_interval_s`` (0.5 s by default). A database hiccup is logged and retried: propagation never
stops for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from strangler_proxy.errors import StoreError

log = logging.getLogger("strangler.flips")


class ReplicaPoller:
    """Calls ``poll`` every ``interval_s`` in a task until stopped (a flip service's and a
    switch service's ``poll_once``, the rollout driver's ``tick``); a failing call is logged
    and the next one comes all the same."""

    def __init__(self, poll: Callable[[], Awaitable[object]], interval_s: float, *,
                 name: str = "strangler-flip-poll") -> None:
        self.poll = poll
        self.interval_s = interval_s
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except StoreError as exc:  # a database hiccup must not stop propagation for good
                log.warning("%s failed (will retry): %s", self.name, exc)
            except Exception:  # noqa: BLE001 -- keep polling whatever happened; it is logged
                log.exception("%s failed (will retry)", self.name)
