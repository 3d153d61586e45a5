"""What the proxy knows of every endpoint: its health, its load, its history.

One :class:`EndpointBoard` per proxy (``runtime.endpoints``) holds an
:class:`EndpointHealth` per upstream endpoint, shared by every pool that sends
to it -- the served path's, the shadow path's, the GraphQL gateway's -- so an
endpoint one of them ejected is avoided by all, a drain waits for all their
requests, and ``strangler upstreams`` reads one truth. The pools keep their own
connections and retry budgets (their own limits); health is common.

An endpoint may serve when it is **not ejected** (passive outlier detection:
``outlier.consecutive_failures`` connect failures or 5xx in a row eject it for
``base_ejection_s * 2**(n-1)``, at most ``max_ejection_s``) **and**, when the
upstream has ``health:``, its **active checks** pass (``unhealthy_after``
failed checks in a row mark it unhealthy, ``healthy_after`` 2xx bring it
back). The pool's decision itself is :mod:`strangler_proxy.routing.endpoints`.

    >>> from strangler_proxy.config import OutlierConfig
    >>> ep = EndpointHealth("legacy", "http://a", "eu", 0)
    >>> rule = OutlierConfig(consecutive_failures=2, base_ejection_s=10, max_ejection_s=25)
    >>> ep.failed(rule, now=100.0, may_eject=True), ep.failed(rule, now=100.0, may_eject=True)
    (False, True)
    >>> ep.serving(now=105.0), ep.serving(now=110.0)
    (False, True)
    >>> [ep.failed(rule, now=111.0, may_eject=True) for _ in range(2)], ep.ejected_until  # 20 s the second time
    ([False, True], 131.0)
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from strangler_proxy.config import HealthCheckConfig, OutlierConfig, StranglerConfig, UpstreamConfig
from strangler_proxy.metrics import LATENCY_BUCKETS, EndpointSample, ProxyMetrics
from strangler_proxy.routing.endpoints import NO_SWITCH, EndpointTable, UpstreamSwitch, candidates

log = logging.getLogger("strangler.endpoints")

RECENT_LATENCIES = 512  # the window p50/p99 of `strangler upstreams` are read from
CHECK_JITTER = 0.1  # checks are spread by +-10 % of the interval, so replicas do not check in step
CHECK_USER_AGENT = "strangler-health-check"


def shown_url(url: str) -> str:
    """An endpoint URL as it may be shown: a password in it becomes ``***``.

    >>> shown_url("http://app:pw@10.0.0.1:8001"), shown_url("http://10.0.0.1:8001")
    ('http://app:***@10.0.0.1:8001', 'http://10.0.0.1:8001')
    """
    parsed = URL(url)
    return url if parsed.password is None else str(parsed.with_password("***"))


class HealthEpoch:
    """Counts the health changes of a board's endpoints (an ejection, a check
    turning): a pool keeps its candidates while the count stands still."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class SwitchCell:
    """An upstream's current :class:`UpstreamSwitch`, one reference every pool of it reads."""

    __slots__ = ("switch",)

    def __init__(self) -> None:
        self.switch: UpstreamSwitch = NO_SWITCH


class EndpointHealth:
    """The mutable state of one endpoint of one upstream (one event loop: no locks).

    Counters are plain ints the pools bump; the Prometheus collector and
    ``strangler upstreams`` read them when asked.
    """

    __slots__ = ("upstream", "url", "label", "zone", "priority", "weight", "in_flight", "check_ok",
                 "_check_streak", "consecutive", "ejected_until", "ejections", "_backoff", "requests", "failures",
                 "latency_sum", "buckets", "_recent", "_recent_n", "_epoch")

    def __init__(self, upstream: str, url: str, zone: str, priority: int, weight: int = 1,
                 epoch: HealthEpoch | None = None) -> None:
        self.upstream = upstream
        self.url = url
        self.label = shown_url(url)  # what logs, metrics and the admin API name it
        self.zone = zone
        self.priority = priority
        self.weight = weight
        self.in_flight = 0
        self.check_ok = True  # an endpoint starts healthy: a fresh proxy serves at once
        self._check_streak = 0  # > 0: passes in a row, < 0: failures in a row
        self.consecutive = 0  # failures in a row (connect failures, resets, 5xx)
        self.ejected_until = 0.0  # time.monotonic() it may serve again
        self.ejections = 0
        self._backoff = 0  # the ejection's exponent; restarts after a long healthy spell
        self.requests = 0
        self.failures = 0
        self.latency_sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self._recent = array("d", bytes(8 * RECENT_LATENCIES))
        self._recent_n = 0
        self._epoch = epoch if epoch is not None else HealthEpoch()

    # ------------------------------------------------------------ the pools' side
    def drained_by(self, switch: UpstreamSwitch) -> bool:
        """Whether ``switch`` drains this endpoint (named by its URL, or by its URL as shown)."""
        return self.url in switch.drained or self.label in switch.drained

    def serving(self, now: float) -> bool:
        """Healthy for a choice: not ejected, and the active checks (if any) pass."""
        return self.check_ok and self.ejected_until <= now

    def done(self) -> None:
        """A request finished (its response was released or closed)."""
        self.in_flight -= 1

    def observe(self, latency_s: float) -> None:
        """One answer's time to response headers."""
        self.requests += 1
        self.latency_sum += latency_s
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        self._recent[self._recent_n % RECENT_LATENCIES] = latency_s
        self._recent_n += 1

    def succeeded(self) -> None:
        self.consecutive = 0

    def failed(self, rule: OutlierConfig, *, now: float, may_eject: bool) -> bool:
        """Count a failure; True when it ejects the endpoint now.

        ``may_eject`` is the pool's answer to ``max_ejected_percent``. The
        back-off exponent restarts when the last ejection ended more than
        ``max_ejection_s`` ago (a long healthy spell forgives the past).
        """
        self.failures += 1
        self.consecutive += 1
        if self.consecutive < rule.consecutive_failures or self.ejected_until > now or not may_eject:
            return False
        if now - self.ejected_until > rule.max_ejection_s:
            self._backoff = 0
        self._backoff += 1
        self.ejections += 1
        self.consecutive = 0  # back from ejection, it needs as many failures again
        self.ejected_until = now + min(rule.base_ejection_s * 2 ** (self._backoff - 1), rule.max_ejection_s)
        self._epoch.value += 1
        return True

    # ------------------------------------------------------------ the active checks
    def check_result(self, ok: bool, rule: HealthCheckConfig) -> bool | None:
        """Record one active check; the new health when it changed, else None."""
        if ok:
            self._check_streak = self._check_streak + 1 if self._check_streak > 0 else 1
            if not self.check_ok and self._check_streak >= rule.healthy_after:
                self.set_check(True)
                return True
        else:
            self._check_streak = self._check_streak - 1 if self._check_streak < 0 else -1
            if self.check_ok and -self._check_streak >= rule.unhealthy_after:
                self.set_check(False)
                return False
        return None

    def set_check(self, ok: bool) -> None:
        self.check_ok = ok
        self._epoch.value += 1

    # ------------------------------------------------------------ reading
    def percentile_s(self, q: float) -> float | None:
        """The q-quantile (0..1) of the last :data:`RECENT_LATENCIES` answers, or None before any."""
        n = min(self._recent_n, RECENT_LATENCIES)
        if n == 0:
            return None
        ordered = sorted(self._recent[:n])
        return ordered[min(n - 1, int(q * n))]


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One endpoint as ``strangler upstreams`` and the admin API show it."""

    upstream: str
    url: str  # as the file gives it (a password in it too: show it through shown_url)
    zone: str
    priority: int
    weight: int
    healthy: bool  # may serve: not ejected and its checks (if any) pass
    check: str  # "healthy" | "unhealthy" | "off" (no health: configured)
    ejected: bool
    ejected_for_s: float  # seconds of ejection left, 0 when not ejected
    ejections: int
    in_flight: int
    requests: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    drained: bool
    serving_priority: int | None  # the priority level the upstream serves from now (None: nothing to choose)

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class EndpointBoard:
    """Every endpoint's :class:`EndpointHealth`, the operators' switches and the
    active checkers of one proxy (see the module docstring).

    The control plane pushes switches with :meth:`set_switches` (the runtime
    follows them); ``strangler upstreams`` reads :meth:`describe`.
    """

    def __init__(self, metrics: ProxyMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self._endpoints: dict[tuple[str, str], EndpointHealth] = {}
        self._cells: dict[str, SwitchCell] = {}
        self._checkers: dict[str, HealthChecker] = {}
        self._users = 0  # open pool registries: checkers run while there is one
        self._configs: dict[str, UpstreamConfig] = {}  # the latest config each upstream's pools were made from
        self.epoch = HealthEpoch()
        self.metrics.track_endpoints(self._samples, self._levels)

    # ------------------------------------------------------------ pools
    def endpoints(self, name: str, config: UpstreamConfig) -> list[EndpointHealth]:
        """The shared state of ``config``'s endpoints, in config order (made on first use;
        a reload that moves an endpoint to another zone, priority or weight updates it)."""
        self._configs[name] = config
        out = []
        for e in config.endpoint_list:
            ep = self._endpoints.get((name, e.url))
            if ep is None:
                ep = self._endpoints[(name, e.url)] = EndpointHealth(name, e.url, e.zone, e.priority, e.weight,
                                                                     self.epoch)
            else:
                ep.zone, ep.priority, ep.weight = e.zone, e.priority, e.weight
            out.append(ep)
        return out

    def cell(self, name: str) -> SwitchCell:
        cell = self._cells.get(name)
        if cell is None:
            cell = self._cells[name] = SwitchCell()
        return cell

    def retain(self) -> None:
        self._users += 1

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            await self.stop_checks()

    def watch(self, name: str, config: UpstreamConfig) -> None:
        """Run ``config``'s active checks (on the running loop), replacing other ones of ``name``."""
        checker = self._checkers.get(name)
        key = None if config.health is None else (config.health, config.endpoint_list)
        if checker is not None and checker.key == key and checker.running:
            return
        if checker is not None:
            self._checkers.pop(name).stop()
            if key is None:  # checks switched off: only outlier detection decides from now on
                for ep in checker.endpoints:
                    ep.set_check(True)
        if key is not None:
            self._checkers[name] = HealthChecker(name, config, self.endpoints(name, config))

    async def stop_checks(self) -> None:
        checkers, self._checkers = list(self._checkers.values()), {}
        for checker in checkers:
            checker.stop()
        await asyncio.gather(*(c.wait() for c in checkers), return_exceptions=True)

    # ------------------------------------------------------------ the operators' switches
    def set_switches(self, switches: Mapping[str, UpstreamSwitch]) -> None:
        """Every upstream's switches at once (an upstream not named has none)."""
        for name, cell in self._cells.items():
            if name not in switches:
                cell.switch = NO_SWITCH
        for name, switch in switches.items():
            self.cell(name).switch = switch

    def set_switch(self, name: str, switch: UpstreamSwitch) -> None:
        self.cell(name).switch = switch

    def switch(self, name: str) -> UpstreamSwitch:
        return self.cell(name).switch

    def in_flight(self, name: str, url: str) -> int:
        """Requests the endpoint (its URL, or its URL as shown) is serving now, on every
        path (0 for one never used): a drained endpoint is drained when this is 0."""
        ep = self._endpoints.get((name, url))
        if ep is None:
            ep = next((e for (n, _), e in self._endpoints.items() if n == name and e.label == url), None)
        return ep.in_flight if ep is not None else 0

    # ------------------------------------------------------------ reading
    def describe(self, config: StranglerConfig) -> list[EndpointStatus]:
        """Every endpoint of ``config``'s upstreams, in config order."""
        now = time.monotonic()
        out: list[EndpointStatus] = []
        for name, upstream in config.upstreams.items():
            eps = self.endpoints(name, upstream)
            switch = self.switch(name)
            level = serving_priority(upstream, eps, switch, now)
            for ep in eps:
                p50, p99 = ep.percentile_s(0.5), ep.percentile_s(0.99)
                out.append(EndpointStatus(
                    upstream=name, url=ep.url, zone=ep.zone, priority=ep.priority, weight=ep.weight,
                    healthy=ep.serving(now), check=("healthy" if ep.check_ok else "unhealthy") if upstream.health
                    else "off", ejected=ep.ejected_until > now, ejected_for_s=round(max(0.0, ep.ejected_until - now), 3),
                    ejections=ep.ejections, in_flight=ep.in_flight, requests=ep.requests, failures=ep.failures,
                    p50_ms=None if p50 is None else round(p50 * 1000, 3),
                    p99_ms=None if p99 is None else round(p99 * 1000, 3),
                    drained=ep.drained_by(switch), serving_priority=level,
                ))
        return out

    def _samples(self) -> Iterator[EndpointSample]:
        """Every endpoint of the upstreams' latest configs (one a reload removed is no longer exported)."""
        now = time.monotonic()
        for name, config in list(self._configs.items()):
            switch = self.switch(name)
            for e in config.endpoint_list:
                ep = self._endpoints.get((name, e.url))
                if ep is None:
                    continue
                yield EndpointSample(
                    upstream=name, endpoint=ep.label, zone=ep.zone, healthy=ep.serving(now),
                    drained=ep.drained_by(switch), in_flight=ep.in_flight, requests=ep.requests,
                    latency_buckets=tuple(ep.buckets), latency_sum=ep.latency_sum,
                )

    def _levels(self) -> Iterator[tuple[str, int]]:
        now = time.monotonic()
        for name, config in list(self._configs.items()):
            level = serving_priority(config, self.endpoints(name, config), self.switch(name), now)
            if level is not None:
                yield name, level


def serving_priority(config: UpstreamConfig, eps: Iterable[EndpointHealth], switch: UpstreamSwitch,
                     now: float) -> int | None:
    """The priority level a request of this upstream is served from now (failover
    shows as a number above 0), by the same choice a request makes."""
    eps = list(eps)
    table = EndpointTable.build([e.url for e in eps], [e.zone for e in eps], [e.priority for e in eps],
                                [e.weight for e in eps], config.failover_threshold)
    among = candidates(table, [e.serving(now) for e in eps], [e.drained_by(switch) for e in eps],
                       pinned_zone=switch.pinned_zone)
    return min((eps[i].priority for i in among), default=None)


class HealthChecker:
    """Active checks of one upstream: GET ``health.path`` on every endpoint every
    ``interval_s`` (each bounded by ``timeout_s``) through a small session of its own."""

    def __init__(self, name: str, config: UpstreamConfig, endpoints: list[EndpointHealth]) -> None:
        assert config.health is not None
        self.name = name
        self.rule: HealthCheckConfig = config.health
        self.key: tuple[HealthCheckConfig, tuple[Any, ...]] | None = (config.health, config.endpoint_list)
        self.endpoints = endpoints
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"strangler-health-{name}")

    @property
    def running(self) -> bool:
        return not self._task.done()

    def stop(self) -> None:
        self._task.cancel()

    async def wait(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        rule = self.rule
        timeout = aiohttp.ClientTimeout(total=rule.timeout_s)
        connector = aiohttp.TCPConnector(limit=len(self.endpoints), limit_per_host=1)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                         headers={"User-Agent": CHECK_USER_AGENT}) as session:
            while True:
                await asyncio.gather(*(self._check(session, ep) for ep in self.endpoints))
                await asyncio.sleep(rule.interval_s * (1 + CHECK_JITTER * (2 * random.random() - 1)))

    async def _check(self, session: aiohttp.ClientSession, ep: EndpointHealth) -> None:
        try:
            async with session.get(ep.url.rstrip("/") + self.rule.path, allow_redirects=False) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        changed = ep.check_result(ok, self.rule)
        if changed is not None:
            log.warning("upstream %s endpoint %s is %s (active checks of %s)", self.name, ep.label,
                        "healthy again" if changed else "unhealthy", self.rule.path)
