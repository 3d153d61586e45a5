"""A group of proxy worker processes (``strangler proxy --workers N``, see
strangler_proxy/workers.py): where each announces its admin API, how worker 0
asks the others for their counters, and how those add up.

    peers = WorkerPeers(WorkerSpec(0, 2, "/tmp/strangler-workers-x", token))
    peers.announce(admin_port)
    merged = merge_metrics([(0, own_text), *await peers.metrics()])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("strangler.workers")

PEER_TIMEOUT_S = 2.0  # worker 0 waits this long for another worker's counters


@dataclass(frozen=True)
class WorkerSpec:
    """This process's place in a group of workers."""

    index: int  # 0 serves the admin API for the group
    count: int
    peers_dir: str  # where each worker announces its admin port
    token: str  # the group's own admin token (worker 0 -> the others)


class WorkerPeers:
    """The other workers of a group, as worker 0 sees them (and how each announces itself)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._dir = Path(spec.peers_dir)

    def announce(self, admin_port: int) -> None:
        """Tell worker 0 where this worker's admin API listens (written whole, then renamed)."""
        final = self._dir / f"worker-{self.spec.index}.port"
        tmp = final.with_suffix(".tmp")
        tmp.write_text(str(admin_port))
        tmp.replace(final)

    def urls(self) -> list[tuple[int, str]]:
        """(index, admin URL) of every other worker that announced itself."""
        out: list[tuple[int, str]] = []
        for path in sorted(self._dir.glob("worker-*.port")):
            index = int(path.stem.split("-", 1)[1])
            if index != self.spec.index:
                out.append((index, f"http://127.0.0.1:{int(path.read_text())}"))
        return out

    async def _get_all(self, path: str, read: Callable[[aiohttp.ClientResponse], Any]) -> list[tuple[int, Any]]:
        headers = {"Authorization": f"Bearer {self.spec.token}"}
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(index: int, url: str) -> tuple[int, Any] | None:
                try:
                    async with session.get(url + path, headers=headers) as resp:
                        if resp.status != 200:
                            return None
                        return index, await read(resp)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    log.warning("worker %d did not answer %s: %s", index, path, exc)
                    return None

            got = await asyncio.gather(*(one(i, u) for i, u in self.urls()))
        return [g for g in got if g is not None]

    async def metrics(self) -> list[tuple[int, str]]:
        """(index, Prometheus text) of every other worker."""
        return await self._get_all("/metrics", lambda r: r.text())

    async def counters(self) -> list[dict[str, dict[str, int]]]:
        """Every other worker's route counters."""
        return [c for _, c in await self._get_all("/_worker/counters", lambda r: r.json())]


def add_counters(into: dict[str, dict[str, int]], more: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Route counters of several workers, summed.

    >>> add_counters({"a": {"requests": 1}}, [{"a": {"requests": 2}, "b": {"requests": 5}}])
    {'a': {'requests': 3}, 'b': {'requests': 5}}
    """
    for counters in more:
        for route, values in counters.items():
            mine = into.setdefault(route, {})
            for key, value in values.items():
                mine[key] = mine.get(key, 0) + value
    return into


class _Parsed:
    """A collector over already-parsed metric families (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_metrics(texts: Iterable[tuple[int, str]]) -> bytes:
    """Several workers' Prometheus texts as one, every sample labelled with its ``worker``.

    >>> text = merge_metrics([(0, "# TYPE x_total counter\\nx_total 1.0\\n"), (1, "# TYPE x_total counter\\nx_total 2.0\\n")])
    >>> [line for line in text.decode().splitlines() if line.startswith("x_total")]
    ['x_total{worker="0"} 1.0', 'x_total{worker="1"} 2.0']
    """
    families: dict[str, Metric] = {}
    for index, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp, s.exemplar)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)
