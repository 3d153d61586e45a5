"""The shadow path: mirrored requests, off the hot path, bounded everywhere.

The request handler builds a :class:`ShadowJob` *after* the client's response
is complete and calls :meth:`ShadowDispatcher.submit`, which never blocks: a
full queue (by count or by queued bytes) drops the job and counts it. A fixed
pool of workers sends each mirrored request through its own connection pools
(the lean connections of upstream.py, as the served path's, but never the same
ones: shadow traffic can never exhaust the serving pools) with its own timeout,
captures the answer (body bounded by ``ShadowSettings.body_limit``), joins it
with the served exchange into a :class:`ShadowPair` and hands it to the
:class:`Comparator` (the diff engine, ``comparator.DiffComparator``); every
listener sees the result inside ``try/except``.

A mismatch on a safe request is not published at once: the dispatcher's
:class:`~strangler_proxy.diff.recheck.Rechecker` asks the served upstream and
the candidate again after ``compare.recheck_after_s`` (in a task of its own,
within ``shadow.recheck_budget_per_s``) and records it as ``transient`` when
they then agree -- replication lag, not disagreement (docs/diff.md "Rechecks").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from strangler_proxy.config import CompareConfig, ShadowSettings
from strangler_proxy.dataplane.forwarder import UPSTREAM_FAILURES, response_headers, translate
from strangler_proxy.dataplane.pool import Upstreams
from strangler_proxy.dataplane.upstream import (
    ConnectFailed,
    ConnectTimedOut,
    KeepAlive,
    LeanEndpointClient,
    LeanResponse,
)
from strangler_proxy.diff.comparator import Comparator, failure_reason
from strangler_proxy.diff.exchange import Exchange, Headers, ShadowPair, Side
from strangler_proxy.diff.noise import wants_noise_sample
from strangler_proxy.diff.recheck import Rechecker, recheck_delay
from strangler_proxy.diff.result import ResultListener, ShadowResult, Verdict
from strangler_proxy.errors import UpstreamError, UpstreamTimeout
from strangler_proxy.routing.methods import SAFE_METHODS

if TYPE_CHECKING:
    from strangler_proxy.dataplane.runtime import ProxyRuntime

log = logging.getLogger("strangler.shadow")

# Besides the count limit, queued jobs may hold at most this many body bytes,
# so a dead or slow candidate can never grow memory beyond it.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
SKIP_BODY_TOO_LARGE = "request-body-over-limit"
# After a connect failure (every endpoint the pool could try refused), mirrors
# to that upstream fail fast (no new socket)
# for this long: a dead candidate then costs almost nothing per request.
CONNECT_BACKOFF_S = 1.0
# Pairs bigger than this are diffed in a thread so a 100 KB body (about 1.4 ms
# of diffing) does not stall the event loop that serves clients.
THREAD_COMPARE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One mirrored request to send, and the served exchange to compare it with."""

    route: str
    mode: str
    served_by: Side
    served: Exchange
    upstream: str  # where the mirror goes
    method: str
    raw_path: str  # as sent to the mirror (target rewrite applied)
    raw_query: str
    headers: Headers  # forwarded headers incl. X-Strangler-Shadow (and Dry-Run)
    body: bytes | None
    compare: CompareConfig
    partition: str | None = None

    @property
    def size(self) -> int:
        return len(self.body or b"") + len(self.served.body) + (len(self.served.request_body or b""))


class ShadowDispatcher:
    """Bounded queue + bounded worker pool for mirrored requests."""

    def __init__(
        self,
        settings: ShadowSettings,
        comparator: Comparator,
        listeners: Sequence[ResultListener],
        runtime: ProxyRuntime,
    ) -> None:
        self.settings = settings
        self.comparator = comparator
        self.listeners: list[ResultListener] = list(listeners)
        self.runtime = runtime
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._workers: list[asyncio.Task[None]] = []
        # Its own pools and retry budgets (mirrors never take the served path's
        # connections), the served path's view of endpoint health.
        self._upstreams = Upstreams(runtime.endpoints, client_factory=partial(LeanEndpointClient, keepalive=KeepAlive()))
        self._queued_bytes = 0
        self.completed = 0  # finished comparisons (for tests and the admin API)
        self._down_until: dict[str, float] = {}
        metrics = runtime.metrics
        # Shared with the GraphQL field shadows (server.py): one budget per replica.
        self.rechecker = Rechecker(
            self.publish, budget_per_s=settings.recheck_budget_per_s, max_inflight=settings.recheck_max_inflight,
            count=lambda key, outcome: metrics.inc(metrics.rechecks, key, outcome),
        )

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def add_listener(self, listener: ResultListener) -> None:
        self.listeners.append(listener)

    async def start(self) -> None:
        if self._queue is not None:
            return
        self._queue = asyncio.Queue(self.settings.queue_size)
        self.runtime.metrics.track_queue(lambda: self.depth)
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), name=f"shadow-worker-{i}")
            for i in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._queue = None
        await self.rechecker.stop()
        await self._upstreams.close()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until every queued job is finished and every recheck decided (tests, graceful stop)."""
        start = time.monotonic()
        if self._queue is not None:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        await self.rechecker.drain(timeout_s - (time.monotonic() - start))

    # ------------------------------------------------------------- hot path
    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without blocking; False (and counted) when full."""
        queue = self._queue
        size = job.size
        metrics = self.runtime.metrics
        if queue is None or self._queued_bytes + size > MAX_QUEUED_BYTES:
            ok = False
        else:
            try:
                queue.put_nowait(job)
                ok = True
            except asyncio.QueueFull:
                ok = False
        counters = self.runtime.counters(job.route)
        if ok:
            self._queued_bytes += size
            counters.shadowed += 1
            metrics.inc(metrics.shadow_submitted, job.route)
        else:
            counters.shadow_dropped += 1
            metrics.inc(metrics.shadow_dropped, job.route)
        return ok

    def skip(self, route: str, mode: str, method: str, target: str, reason: str) -> None:
        """Record a request that was not mirrored; listeners get a SKIPPED result
        on the next loop iteration, never inside the request."""
        self.runtime.counters(route).shadow_skipped += 1
        metrics = self.runtime.metrics
        metrics.inc(metrics.shadow_skipped, route, reason)
        result = ShadowResult(key=route, mode=mode, verdict=Verdict.SKIPPED, at=time.time(), reason=reason,
                              method=method, target=target)
        asyncio.get_running_loop().call_soon(self.publish, result)

    def served(self, route: str, mode: str, method: str, target: str, status: int | None,
               latency_s: float, error: str | None) -> None:
        """Record a request the candidate served that nothing compares: SERVED,
        or CANDIDATE_ERROR when it failed (even if legacy then answered as a
        fallback). Listeners get it on the next loop iteration."""
        failed = error is not None or status is None or status >= 500
        result = ShadowResult(
            key=route, mode=mode, verdict=Verdict.CANDIDATE_ERROR if failed else Verdict.SERVED, at=time.time(),
            candidate_status=status, candidate_latency_s=latency_s,
            reason=failure_reason("candidate", status, error) if failed else None, method=method, target=target,
        )
        asyncio.get_running_loop().call_soon(self.publish, result)

    # ------------------------------------------------------------ the workers
    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a worker must survive anything a job does
                log.exception("shadow job for route %s failed", job.route)
            finally:
                self._queued_bytes -= job.size
                queue.task_done()

    async def _run(self, job: ShadowJob) -> None:
        mirror = await self._mirror(job)
        legacy_again = await self._legacy_again(job)
        metrics = self.runtime.metrics
        side = "target" if job.served_by == "legacy" else "legacy"
        metrics.upstream(job.route, side, "shadow", mirror.latency_s)
        try:
            result = await self._compare(job, job.served, mirror, legacy_again)
        except Exception:
            metrics.listener_errors.inc()
            log.exception("comparator failed for route %s", job.route)
            return
        self.completed += 1
        after = recheck_delay(result, job.compare, safe=job.method in SAFE_METHODS)
        if after is None:
            self.publish(result)
        else:
            self.rechecker.submit([result], after, lambda: self._compare_again(job))

    async def _compare(self, job: ShadowJob, served: Exchange, mirror: Exchange,
                       legacy_again: Exchange | None = None) -> ShadowResult:
        if job.served_by == "legacy":
            pair = ShadowPair(job.route, job.mode, "legacy", served, mirror, legacy_again, partition=job.partition)
        else:
            pair = ShadowPair(job.route, job.mode, "target", mirror, served, legacy_again, partition=job.partition)
        if len(pair.legacy.body) + len(pair.candidate.body) > THREAD_COMPARE_BYTES:
            return await asyncio.to_thread(self.comparator.compare, pair, job.compare)
        return self.comparator.compare(pair, job.compare)

    async def _compare_again(self, job: ShadowJob) -> ShadowResult:
        """A recheck: the served upstream and the mirror's asked again at the same
        time, compared with the same comparator and rules."""
        served, mirror = await asyncio.gather(self._mirror(_to_served(job)), self._mirror(job))
        return await self._compare(job, served, mirror)

    async def _legacy_again(self, job: ShadowJob) -> Exchange | None:
        """For a sample of safe requests, ask legacy a second time: what differs
        between two legacy answers is learned as noise (see noise.py)."""
        if not wants_noise_sample(job.compare, job.method, random.random()):
            return None
        # In a reverse shadow the mirror itself went to legacy.
        return await self._mirror(_to_served(job) if job.served_by == "legacy" else job)

    def publish(self, result: ShadowResult) -> None:
        """Count a finished result and hand it to every listener (never raises).
        Also used by the GraphQL gateway for its field shadows."""
        metrics = self.runtime.metrics
        metrics.inc(metrics.verdicts, result.key, result.verdict.value)
        for listener in self.listeners:
            try:
                listener.observe(result)
            except Exception:
                metrics.listener_errors.inc()
                log.exception("shadow result listener %r failed", listener)

    async def _mirror(self, job: ShadowJob) -> Exchange:
        target = job.raw_path + ("?" + job.raw_query if job.raw_query else "")
        config = self.runtime.config.upstreams.get(job.upstream)
        start = time.perf_counter()
        if config is None:
            return Exchange(upstream=job.upstream, method=job.method, target=target, error="unknown-upstream")
        if self._down_until.get(job.upstream, 0.0) > start:
            return Exchange(upstream=job.upstream, method=job.method, target=target, error="connect",
                            request_headers=job.headers, request_body=job.body)
        client = self._upstreams.get(job.upstream, config)
        status: int | None = None
        headers: Headers = ()
        capture = _Capture(self.settings.body_limit)
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.timeout_s):  # the whole exchange, body included
                resp: LeanResponse = await client.send(job.method, job.raw_path, job.raw_query, list(job.headers),
                                                       job.body)
                status = resp.status
                headers = tuple(response_headers(resp.raw_headers, resp.hop))
                capture.full = resp.close  # over the limit: the rest is not read (the connection closes)
                try:
                    await resp.pipe(capture)
                except UPSTREAM_FAILURES:
                    if not capture.truncated:
                        raise
        except UpstreamError as exc:
            error = "timeout" if isinstance(exc, UpstreamTimeout) else "connect"
            cause = exc.__cause__
            if isinstance(cause, ConnectFailed) and not isinstance(cause, ConnectTimedOut):  # refused, unreachable
                self._down_until[job.upstream] = time.perf_counter() + CONNECT_BACKOFF_S
        except TimeoutError:
            error = "timeout"
        except UPSTREAM_FAILURES as exc:
            err = translate(exc, job.upstream)
            error = "timeout" if isinstance(err, UpstreamTimeout) else "reset"
        body, truncated = bytes(capture.buf), capture.truncated
        return Exchange(
            upstream=job.upstream, method=job.method, target=target, status=status if error is None else None,
            request_headers=job.headers, request_body=job.body, response_headers=headers, body=body,
            latency_s=time.perf_counter() - start, error=error, body_truncated=truncated,
        )



class _Capture:
    """A mirrored answer's body, at most ``limit`` bytes: past it, ``full`` is called once."""

    __slots__ = ("buf", "limit", "truncated", "full")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.truncated = False
        self.full: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        if self.truncated:
            return
        room = self.limit - len(self.buf)
        if len(data) > room:
            self.buf += data[:room]
            self.truncated = True
            if self.full is not None:
                self.full()
        else:
            self.buf += data

    def flush(self) -> None:
        pass


def _to_served(job: ShadowJob) -> ShadowJob:
    """``job`` sent to the upstream that served the client, at the target it was served."""
    path, _, query = job.served.target.partition("?")
    return ShadowJob(
        route=job.route, mode=job.mode, served_by=job.served_by, served=job.served,
        upstream=job.served.upstream, method=job.method, raw_path=path, raw_query=query,
        headers=job.headers, body=job.body, compare=job.compare, partition=job.partition,
    )
