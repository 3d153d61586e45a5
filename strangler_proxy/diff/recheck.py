"""Rechecks: a mismatch on a read asked again, to tell replication lag from disagreement.

An extracted service receives the monolith's writes through the outbox sync a
fraction of a second late (``datamove/sync.py`` measures it:
``strangler_sync_lag_seconds``). A read shadowed right after a write can then
disagree only because the candidate's copy is behind. So a MISMATCH on a safe
request -- GET, HEAD, OPTIONS, and GraphQL field shadows (only queries are
shadowed) -- is not published at once: ``compare.recheck_after_s`` later the
shadow path asks *both* sides again (the upstream that served the client, and
the candidate) and compares the new pair with the same comparator and rules.

=============  ==========================================  =====================================
outcome        when                                        recorded as
=============  ==========================================  =====================================
``transient``  the second comparison is a MATCH            the first result as ``transient``
``mismatch``   it is a MISMATCH again                      the first result (a mismatch)
``error``      a side failed the second time, or asking    the first result (a mismatch)
               raised
``over_budget`` no budget left this second, or             the first result (a mismatch), at
               ``max_inflight`` rechecks already waiting   once, without asking again
=============  ==========================================  =====================================

Every decided result carries its outcome in ``result.extra["recheck"]`` and is
counted (``count(key, outcome)``: ``strangler_rechecks_total``). Rechecks never
touch the client's path: the shadow path hands a mismatch over after the
client's answer, and each recheck is a task of its own (the shadow workers are
not held while it waits). They are bounded by a token bucket
(``budget_per_s``, holding one second's worth) and by ``max_inflight``.

A proxy that stops drops the rechecks still waiting (logged); :meth:`Rechecker.drain`
waits for them instead.

    >>> r = ShadowResult("ratings", "shadow", Verdict.MISMATCH, 0.0, method="GET")
    >>> recheck_delay(r, CompareConfig(), safe=True)
    0.5
    >>> recheck_delay(r, CompareConfig(recheck_after_s=0), safe=True) is None
    True
    >>> recheck_delay(r, CompareConfig(), safe=False) is None   # a (dry-run) write
    True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from strangler_proxy.config import (
    DEFAULT_RECHECK_AFTER_S,
    DEFAULT_RECHECK_BUDGET_PER_S,
    DEFAULT_RECHECK_MAX_INFLIGHT,
    CompareConfig,
)
from strangler_proxy.diff.result import ShadowResult, Verdict

log = logging.getLogger("strangler.recheck")

OUTCOME_TRANSIENT = "transient"
OUTCOME_MISMATCH = "mismatch"
OUTCOME_ERROR = "error"
OUTCOME_OVER_BUDGET = "over_budget"
OUTCOMES = (OUTCOME_TRANSIENT, OUTCOME_MISMATCH, OUTCOME_ERROR, OUTCOME_OVER_BUDGET)
EXTRA_KEY = "recheck"  # result.extra[EXTRA_KEY]: the outcome of a recheck (or why there was none)

# Asks both sides again and compares them with the same comparator and rules.
AskAgain = Callable[[], Awaitable[ShadowResult]]


def recheck_delay(result: ShadowResult, rules: CompareConfig, *, safe: bool) -> float | None:
    """Seconds to wait before asking again, or None when ``result`` is not
    rechecked: not a mismatch, not a safe request, or ``recheck_after_s: 0``."""
    if result.verdict is not Verdict.MISMATCH or not safe:
        return None
    after = DEFAULT_RECHECK_AFTER_S if rules.recheck_after_s is None else rules.recheck_after_s
    return after if after > 0 else None


class Budget:
    """A token bucket: ``rate`` tokens a second, holding at most one second's worth (at least one).

        >>> now = [0.0]
        >>> b = Budget(2, clock=lambda: now[0])
        >>> [b.take(), b.take(), b.take()]
        [True, True, False]
        >>> now[0] = 0.5
        >>> [b.take(), b.take()]
        [True, False]
        >>> Budget(0).take()
        False
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity if rate > 0 else 0.0
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Rechecker:
    """Decides mismatches on reads by asking again (see the module docstring).

    One per proxy replica, shared by the REST shadow path and the GraphQL
    field shadows, so the budget is the replica's:

        rechecker = Rechecker(dispatcher.publish, budget_per_s=50, max_inflight=100)
        after = recheck_delay(result, rules, safe=method in SAFE_METHODS)
        if after is None:
            publish(result)
        else:
            rechecker.submit([result], after, lambda: compare_again(job))
    """

    def __init__(
        self,
        publish: Callable[[ShadowResult], None],
        *,
        budget_per_s: float = DEFAULT_RECHECK_BUDGET_PER_S,
        max_inflight: int = DEFAULT_RECHECK_MAX_INFLIGHT,
        count: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish
        self._budget = Budget(budget_per_s, clock=clock)
        self.max_inflight = max_inflight
        self._count = count
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes: Counter[str] = Counter()  # per decided result (tests, the admin API)

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(self, results: Sequence[ShadowResult], after_s: float, ask: AskAgain) -> None:
        """Decide ``results`` -- one comparison, recorded once per client request
        that saw it -- by asking again in ``after_s`` seconds. Never blocks: over
        the budget they are published at once as they are."""
        if not results:
            return
        if len(self._tasks) >= self.max_inflight or not self._budget.take():
            self._settle(results, OUTCOME_OVER_BUDGET)
            return
        task = asyncio.get_running_loop().create_task(self._recheck(results, after_s, ask),
                                                      name=f"recheck-{results[0].key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recheck(self, results: Sequence[ShadowResult], after_s: float, ask: AskAgain) -> None:
        await asyncio.sleep(after_s)
        try:
            again = await ask()
        except asyncio.CancelledError:
            raise
        except Exception:  # like every shadow-path hook: logged, and the first answer stands
            log.exception("asking %s again failed", results[0].key)
            outcome = OUTCOME_ERROR
        else:
            if again.verdict is Verdict.MATCH:
                outcome = OUTCOME_TRANSIENT
            elif again.verdict is Verdict.MISMATCH:
                outcome = OUTCOME_MISMATCH
            else:  # a side failed (or the comparison was skipped): nothing proves a lag
                outcome = OUTCOME_ERROR
        self._settle(results, outcome)

    def _settle(self, results: Sequence[ShadowResult], outcome: str) -> None:
        for r in results:
            verdict = Verdict.TRANSIENT if outcome == OUTCOME_TRANSIENT else r.verdict
            self.outcomes[outcome] += 1
            if self._count is not None:
                self._count(r.key, outcome)
            self._publish(replace(r, verdict=verdict, extra={**r.extra, EXTRA_KEY: outcome}))

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until no recheck is waiting or running (tests, graceful stop);
        TimeoutError when some still are after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self._tasks)} rechecks still running after {timeout_s:g}s")
            await asyncio.wait(set(self._tasks), timeout=left)

    async def stop(self) -> None:
        """Cancel every recheck still waiting; their mismatches are not recorded."""
        tasks = list(self._tasks)
        if tasks:
            log.info("stopping: %d rechecks still waiting, dropped", len(tasks))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
