"""An upstream's endpoints as one client: choose an endpoint, send, retry elsewhere, learn.

:class:`Upstreams` is a registry of :class:`UpstreamPool` s, one per upstream,
made lazily on the running loop and replaced when a reload changes the
upstream's settings. The served path, the shadow path and the GraphQL gateway
each have their own registry -- their own connections and retry budgets --
over one :class:`~strangler_proxy.dataplane.health.EndpointBoard`, the shared
health, load and switches of every endpoint.

Each :meth:`UpstreamPool.send`:

1. applies the upstream's header rules (``headers.set``/``remove``);
2. chooses an endpoint with the pure decision of
   :mod:`~strangler_proxy.routing.endpoints`: the
   :func:`~strangler_proxy.routing.endpoints.candidates` (priorities, failover
   threshold, panic, drains, zone pin -- kept until an endpoint's health, a
   switch or the end of an ejection changes them), then
   :func:`~strangler_proxy.routing.endpoints.pick` (two random draws, fewer
   requests in flight wins). With one endpoint nothing is chosen;
3. sends through that endpoint's :class:`~strangler_proxy.dataplane.forwarder.EndpointClient`;
4. on a failure, may send again to an endpoint not tried yet:

   * the request never left (connect refused, unreachable, connect timed
     out: :func:`~strangler_proxy.dataplane.forwarder.never_sent`) -- any
     method, even a streamed body: aiohttp connects before it reads a byte
     of the body;
   * the connection broke before a response head
     (:func:`~strangler_proxy.dataplane.forwarder.reset_before_answer`) -- a
     safe method (GET/HEAD/OPTIONS) only, with no body or a body in memory;
   * never a write that may have been received, never a timeout, never a 5xx
     (an answer is an answer);

   within the pool's :class:`RetryBudget` (``retries.budget_percent`` of the
   requests of ``retries.window_s``, plus ``min_per_s``), else counted in
   ``strangler_upstream_retry_budget_exhausted_total``;
5. learns: connect failures, resets and 5xx in a row eject the endpoint
   (``outlier``, never more than ``max_ejected_percent`` of the pool); a
   success resets the count. The endpoint's in-flight count drops when the
   response is released or closed, so a drain knows when it is over.

    upstreams = Upstreams(runtime.endpoints)
    pool = upstreams.get("legacy", config.upstreams["legacy"])
    resp = await pool.send("GET", "/api/titles/tt1", "", headers, None)   # raises UpstreamError only
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Protocol

import aiohttp

from strangler_proxy.config import RetryConfig, UpstreamConfig
from strangler_proxy.dataplane.forwarder import (
    UPSTREAM_FAILURES,
    EndpointClient,
    Headers,
    never_sent,
    reset_before_answer,
    translate,
)
from strangler_proxy.dataplane.health import EndpointBoard, EndpointHealth
from strangler_proxy.errors import UpstreamConnectError
from strangler_proxy.header_rules import HeaderRuleSet, apply_header_rules
from strangler_proxy.routing.endpoints import EndpointTable, UpstreamSwitch, candidates, pick
from strangler_proxy.routing.methods import SAFE_METHODS

log = logging.getLogger("strangler.endpoints")


class EndpointSender(Protocol):
    """One endpoint's connections, whatever carries them: aiohttp's
    (:class:`~strangler_proxy.dataplane.forwarder.EndpointClient`, the shadow
    path and the GraphQL gateway) or the lean ones
    (:class:`~strangler_proxy.dataplane.upstream.LeanEndpointClient`, the
    served path). ``send`` returns once the response head arrived; the
    response has ``status`` and ``connection`` (None once the whole answer is
    in, else something whose ``add_callback`` runs when it is released)."""

    async def send(self, method: str, raw_path: str, raw_query: str, headers: Headers,
                   body: AsyncIterator[bytes] | bytes | None, timeout: Any = None) -> Any: ...

    async def close(self) -> None: ...


ClientFactory = Callable[[str, str, UpstreamConfig], EndpointSender]

CLOSE_GRACE_S = 30.0  # old pools of a reloaded upstream finish in-flight requests
BUDGET_SLOTS = 10  # the retry budget's window moves in tenths
_NOTHING: frozenset[int] = frozenset()


class RetryBudget:
    """How many retries an upstream may make: at most ``budget_percent`` of the
    requests of the last ``window_s``, plus ``min_per_s`` a second always (so a
    quiet upstream can still retry), so retries cannot amplify an outage.

        >>> budget = RetryBudget(RetryConfig(budget_percent=20, window_s=10, min_per_s=0))
        >>> for _ in range(10):
        ...     budget.request(now=1.0)
        >>> budget.allow(now=1.0), budget.allow(now=1.0), budget.allow(now=1.0)
        (True, True, False)
        >>> budget.allow(now=12.0)   # the window moved on: no requests, no retries
        False
    """

    __slots__ = ("_share", "_floor", "_width", "_requests", "_retries", "_slot")

    def __init__(self, rule: RetryConfig) -> None:
        self._share = rule.budget_percent / 100
        self._floor = rule.min_per_s * rule.window_s
        self._width = rule.window_s / BUDGET_SLOTS
        self._requests = [0] * BUDGET_SLOTS
        self._retries = [0] * BUDGET_SLOTS
        self._slot = 0  # the absolute number of the current slot

    def _at(self, now: float) -> int:
        slot = int(now / self._width)
        if slot != self._slot:
            for k in range(1, min(slot - self._slot, BUDGET_SLOTS) + 1):  # forget the slots that passed
                i = (self._slot + k) % BUDGET_SLOTS
                self._requests[i] = self._retries[i] = 0
            self._slot = slot
        return slot % BUDGET_SLOTS

    def request(self, now: float) -> None:
        self._requests[self._at(now)] += 1

    def allow(self, now: float) -> bool:
        """True (and counted) when one more retry fits the budget."""
        i = self._at(now)
        if sum(self._retries) + 1 > self._share * sum(self._requests) + self._floor:
            return False
        self._retries[i] += 1
        return True


class UpstreamPool:
    """One upstream's endpoints behind the interface of one client (see the module
    docstring): ``send``, ``keep_host``, ``name``, ``close``."""

    __slots__ = ("name", "config", "keep_host", "header_rules", "table", "endpoints", "clients", "_board", "_cell",
                 "_switch", "_drained", "_single", "_budget", "_epoch", "_among", "_among_epoch", "_among_until")

    def __init__(self, name: str, config: UpstreamConfig, board: EndpointBoard,
                 client_factory: ClientFactory = EndpointClient) -> None:
        listed = config.endpoint_list
        self.name = name
        self.config = config
        self.keep_host = config.host_header == "preserve"
        # headers.set/remove, ${ENV} resolved once here; None (nothing to do) for most upstreams
        self.header_rules = HeaderRuleSet.build(config.headers.resolved(), config.headers.remove)
        self.table = EndpointTable.build([e.url for e in listed], [e.zone for e in listed],
                                         [e.priority for e in listed], [e.weight for e in listed],
                                         config.failover_threshold)
        self.endpoints: tuple[EndpointHealth, ...] = tuple(board.endpoints(name, config))
        self.clients = tuple(client_factory(name, e.url, config) for e in listed)
        self._board = board
        self._cell = board.cell(name)
        self._switch: UpstreamSwitch | None = None  # the switch _drained and _single were derived from
        self._drained: tuple[bool, ...] = ()
        self._single = False
        self._budget = RetryBudget(config.retries)
        # The candidates of the last choice, good while the board's health epoch is the
        # same, the switch is the same and no ejection has ended since (_among_until).
        self._epoch = board.epoch
        self._among: tuple[int, ...] = ()
        self._among_epoch = -1
        self._among_until = 0.0

    # ------------------------------------------------------------ the operators' switches
    def set_switch(self, switch: UpstreamSwitch) -> None:
        """This upstream's switches, for every pool of it (they share the board)."""
        self._board.set_switch(self.name, switch)

    def in_flight(self, url: str) -> int:
        """Requests the endpoint ``url`` is serving now, on every path."""
        return self._board.in_flight(self.name, url)

    def _follow(self, switch: UpstreamSwitch) -> None:
        self._switch = switch
        self._among_epoch = -1
        self._drained = tuple(ep.drained_by(switch) for ep in self.endpoints)
        self._single = len(self.table) == 1 and not self._drained[0] and (
            switch.pinned_zone is None or switch.pinned_zone == self.table.zones[0])

    # ------------------------------------------------------------ the call
    def send(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Headers,
        body: AsyncIterator[bytes] | bytes | None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Send to the chosen endpoint (another one on a failure that allows it);
        await it for the response, once its headers arrived.

        The caller owns the response: it must ``release()`` or ``close()`` it.
        Raises :class:`~strangler_proxy.errors.UpstreamError` only. ``timeout``
        is the caller's own (the shadow path's, the GraphQL gateway's): its
        expiry is not held against the endpoint. (Not a coroutine function
        itself: it returns the coroutine that sends, one frame fewer per request.)
        """
        if self.header_rules is not None:  # this upstream's own, on a copy: never recorded, never mirrored
            headers = apply_header_rules(headers, self.header_rules)
        switch = self._cell.switch
        if switch is not self._switch:
            self._follow(switch)
        if self._single:  # one endpoint: nothing to choose, nowhere else to go
            return self._attempt(0, method, raw_path, raw_query, headers, body, timeout, choosing=False)
        now = time.monotonic()
        self._budget.request(now)
        return self._attempt(self._choose(now, _NOTHING), method, raw_path, raw_query, headers, body, timeout,
                             choosing=True)

    def _choose(self, now: float, exclude: frozenset[int]) -> int | None:
        if not exclude and self._among_epoch == self._epoch.value and now < self._among_until:
            among = self._among
        else:
            among = self._candidates(now, exclude)
        if len(among) < 2:
            return among[0] if among else None
        draw = random.random
        return pick(self.table, among, [ep.in_flight for ep in self.endpoints], (draw(), draw()))

    def _candidates(self, now: float, exclude: frozenset[int]) -> tuple[int, ...]:
        eps = self.endpoints
        assert self._switch is not None
        among = candidates(self.table, [ep.check_ok and ep.ejected_until <= now for ep in eps], self._drained,
                           pinned_zone=self._switch.pinned_zone, exclude=exclude)
        if not exclude:  # a retry's candidates are its own
            self._among, self._among_epoch = among, self._epoch.value
            self._among_until = min((ep.ejected_until for ep in eps if ep.ejected_until > now), default=math.inf)
        return among

    def _nothing_to_choose(self) -> str:
        switch = self._switch
        if switch is not None and switch.pinned_zone is not None:
            return f"pinned to zone {switch.pinned_zone!r}, where no endpoint can take requests (drained or none)"
        return "every endpoint is drained"

    async def _attempt(
        self, i: int | None, method: str, raw_path: str, raw_query: str, headers: Headers,
        body: AsyncIterator[bytes] | bytes | None, timeout: aiohttp.ClientTimeout | None, *, choosing: bool,
    ) -> aiohttp.ClientResponse:
        """Send on endpoint ``i``; with ``choosing`` (several endpoints), a failure that
        allows it is sent again on another one (see the module docstring), in this same
        frame. Raises the proxy's typed errors."""
        exclude = _NOTHING
        while True:
            if i is None:
                raise UpstreamConnectError(self._nothing_to_choose(), upstream=self.name)
            ep = self.endpoints[i]
            ep.in_flight += 1
            start = time.perf_counter()
            try:
                resp = await self.clients[i].send(method, raw_path, raw_query, headers, body, timeout)
            except UPSTREAM_FAILURES as exc:
                ep.in_flight -= 1
                # A timeout counts when it is the upstream's own (timeout_s), not a caller's shorter one.
                if timeout is None or never_sent(exc) or not isinstance(exc, TimeoutError):
                    self._failed(ep)
                if not choosing or not (never_sent(exc) or (method in SAFE_METHODS and reset_before_answer(exc)
                                                            and not isinstance(body, AsyncIterator))):
                    raise translate(exc, self.name) from exc
                now = time.monotonic()
                exclude = exclude | {i}
                i = self._choose(now, exclude)
                if i is None:  # every endpoint it may use was tried
                    raise translate(exc, self.name) from exc
                metrics = self._board.metrics
                if not self._budget.allow(now):
                    metrics.inc(metrics.retry_budget_exhausted, self.name)
                    raise translate(exc, self.name) from exc
                metrics.inc(metrics.retries, self.name)
                continue
            except BaseException:  # cancelled (a caller's deadline): not the endpoint's fault
                ep.in_flight -= 1
                raise
            ep.observe(time.perf_counter() - start)
            if resp.status >= 500:
                self._failed(ep)
            else:
                ep.consecutive = 0
            conn = resp.connection
            if conn is None:  # the whole answer is in already
                ep.in_flight -= 1
            else:
                conn.add_callback(ep.done)
            return resp

    def _failed(self, ep: EndpointHealth) -> None:
        rule = self.config.outlier
        now = time.monotonic()
        eps = self.endpoints
        may_eject = False
        if ep.consecutive + 1 >= rule.consecutive_failures and len(eps) > 1:
            ejected = sum(1 for e in eps if e.ejected_until > now)
            may_eject = (ejected + 1) * 100 <= rule.max_ejected_percent * len(eps)
        if ep.failed(rule, now=now, may_eject=may_eject):
            metrics = self._board.metrics
            metrics.inc(metrics.ejections, self.name, ep.label)
            log.warning("upstream %s: endpoint %s ejected for %.1fs (%d failures in a row, ejection %d)",
                        self.name, ep.label, ep.ejected_until - now, rule.consecutive_failures, ep.ejections)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


class Upstreams:
    """One :class:`UpstreamPool` per configured upstream, created lazily on the
    running loop and replaced when a reload changes its config; the old pool
    finishes its in-flight requests for :data:`CLOSE_GRACE_S`.

    ``board`` is the shared endpoint state (``runtime.endpoints``); without one
    the registry has its own. Active health checks run while a registry that
    made a pool is open.
    """

    def __init__(self, board: EndpointBoard | None = None, client_factory: ClientFactory = EndpointClient) -> None:
        self.board = board if board is not None else EndpointBoard()
        self._client_factory = client_factory
        self._pools: dict[str, UpstreamPool] = {}
        self._retiring: dict[asyncio.Task[None], UpstreamPool] = {}
        self._retained = False

    def get(self, name: str, config: UpstreamConfig) -> UpstreamPool:
        pool = self._pools.get(name)
        if pool is not None and (pool.config is config or pool.config == config):
            return pool
        if pool is not None:  # reloaded with other settings: retire the old pool gently
            task = asyncio.get_running_loop().create_task(self._retire(pool))
            self._retiring[task] = pool
            task.add_done_callback(lambda t: self._retiring.pop(t, None))
        if not self._retained:
            self.board.retain()
            self._retained = True
        pool = self._pools[name] = UpstreamPool(name, config, self.board, self._client_factory)
        self.board.watch(name, config)
        return pool

    def set_switches(self, switches: Mapping[str, UpstreamSwitch]) -> None:
        """Every upstream's operator switches at once (the control plane's snapshot)."""
        self.board.set_switches(switches)

    def in_flight(self, name: str, url: str) -> int:
        return self.board.in_flight(name, url)

    async def _retire(self, pool: UpstreamPool) -> None:
        await asyncio.sleep(CLOSE_GRACE_S)
        await pool.close()

    async def close(self) -> None:
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        pools = list(self._pools.values()) + [pool for _, pool in retiring]
        self._pools = {}
        for pool in pools:
            await pool.close()
        if self._retained:
            self._retained = False
            await self.board.release()
        await asyncio.sleep(0)  # let aiohttp's transports see their close
