"""The executor: runs a :class:`~.planner.Plan` against the backends and merges the answers.

Root fetches run in parallel (a mutation's in order); then, level by level,
every entity fetch whose parents have arrived: the fetches of one level that go
to one backend share one HTTP request (``e0: _entities(...) e1: _entities(...)``),
and each fetch sends every distinct entity once. A backend that cannot be
reached leaves its fields null with an error at each of their paths, so the
client gets partial data, as the GraphQL spec says (code ``SUBGRAPH_ERROR``).
Backend errors are moved to their paths in the merged answer, with their codes
and the backend's name (:mod:`.codes`; the gateway decides who sees the name).

The merged answer still holds the planner's ``_gw_`` fields; :mod:`.shaping`
turns it into the client's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp
import orjson

from strangler_proxy.config import UpstreamConfig
from strangler_proxy.errors import ConfigError, UpstreamError, UpstreamTimeout
from strangler_proxy.graphql.codes import backend_error, passed_on
from strangler_proxy.graphql.metrics import PATH_SERVED, PATH_SHADOW, GraphQLMetrics
from strangler_proxy.graphql.ownership import in_canary
from strangler_proxy.graphql.planner import TYPENAME_ALIAS, Fetch, KeyFields, Path, Plan, Split
from strangler_proxy.headers import CONTROL_PREFIX

JSON = dict[str, Any]
ResponsePath = tuple[str | int, ...]
DEFAULT_BACKEND_TIMEOUT_S = 30.0
MAX_BATCH_DOCUMENTS = 2048  # cached batch documents (per distinct set of fetches)


class BackendUnavailable(Exception):
    """Internal: a backend gave no usable GraphQL answer (turned into errors, never raised out)."""

    def __init__(self, backend: str, reason: str, kind: str) -> None:
        self.backend = backend
        self.reason = reason
        self.kind = kind  # timeout | connection | not-json | not-graphql (a metric label)
        super().__init__(f"backend {backend!r} unavailable: {reason}")


class BackendPool(Protocol):
    """One upstream's endpoints as one client (the proxy's ``dataplane.pool.UpstreamPool``):
    it chooses an endpoint per fetch, retries one that was never sent, ejects failing ones and
    applies the upstream's header rules. Raises ``UpstreamError`` only."""

    async def send(self, method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]],
                   body: bytes | None, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientResponse: ...


class BackendPools(Protocol):
    """A registry of :class:`BackendPool` s by upstream (the proxy's ``dataplane.pool.Upstreams``)."""

    def get(self, name: str, config: UpstreamConfig) -> BackendPool: ...


@dataclass(frozen=True, slots=True)
class BackendRoute:
    """Where a backend's fetches go through the pools: its upstream and the GraphQL path on it."""

    upstream: str
    config: UpstreamConfig
    path: str


@dataclass(frozen=True)
class BackendClient:
    """Posts GraphQL documents to the backends; every fetch is measured (``path``: served or shadow).

    With ``pools`` (the proxy's), each fetch goes through its backend's upstream pool
    (``routes``): an endpoint is chosen per fetch, as for REST. Without, it posts to the
    fixed ``urls`` (name -> URL of its /graphql) over the session's keep-alive connections."""

    session: aiohttp.ClientSession
    urls: Mapping[str, str]
    timeout_s: float = DEFAULT_BACKEND_TIMEOUT_S
    forward_headers: tuple[str, ...] = ("authorization",)
    metrics: GraphQLMetrics | None = None
    path: str = PATH_SERVED
    pools: BackendPools | None = None
    routes: Mapping[str, BackendRoute] = field(default_factory=dict)
    _timeout: aiohttp.ClientTimeout = field(init=False)

    def __post_init__(self) -> None:
        control = [h for h in self.forward_headers if h.lower().startswith(CONTROL_PREFIX.decode())]
        if control:
            # X-Strangler-* headers are the proxy's to set (a dry run, a shadow):
            # passing a client's copy on would let it commit or cancel a dry run.
            raise ConfigError(f"cannot forward the proxy's control headers {control}: "
                              "drop every X-Strangler-* name from forward_headers", field="forward_headers")
        object.__setattr__(self, "_timeout", aiohttp.ClientTimeout(total=self.timeout_s))

    def for_shadows(self, timeout_s: float) -> BackendClient:
        """The same backends and connections for the shadow path: its own timeout, fetches
        measured under path="shadow"."""
        return replace(self, path=PATH_SHADOW, timeout_s=timeout_s)

    async def query(self, backend: str, document: str, variables: Mapping[str, Any] | None,
                    headers: Mapping[str, str] | None = None) -> JSON:
        start = time.perf_counter()
        try:
            body = await self._query(backend, document, variables, headers)
        except BackendUnavailable as exc:
            if self.metrics is not None:
                self.metrics.fetch_error(backend, self.path, exc.kind)
            raise
        finally:
            if self.metrics is not None:
                self.metrics.fetch(backend, self.path, time.perf_counter() - start)
        return body

    async def _query(self, backend: str, document: str, variables: Mapping[str, Any] | None,
                     headers: Mapping[str, str] | None) -> JSON:
        payload: JSON = {"query": document}
        if variables:
            payload["variables"] = variables
        out_headers = _BACKEND_HEADERS
        if headers:
            extra = {h: headers[h] for h in self.forward_headers if h in headers}
            if extra:
                out_headers = {**_BACKEND_HEADERS, **extra}
        try:
            if self.pools is not None:
                status, raw = await self._through_pool(backend, orjson.dumps(payload), out_headers)
            else:
                async with self.session.post(self.urls[backend], data=orjson.dumps(payload), headers=out_headers,
                                             timeout=self._timeout) as resp:
                    raw = await resp.read()  # read whole: the connection goes back to the keep-alive pool
                    status = resp.status
        except (TimeoutError, UpstreamTimeout) as exc:
            raise BackendUnavailable(backend, "timeout", "timeout") from exc
        except UpstreamError as exc:
            raise BackendUnavailable(backend, type(exc.__cause__ or exc).__name__, "connection") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(backend, type(exc).__name__, "connection") from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BackendUnavailable(backend, f"HTTP {status}, not JSON", "not-json") from exc
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise BackendUnavailable(backend, f"HTTP {status}, not a GraphQL response", "not-graphql")
        return body


    async def _through_pool(self, backend: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        assert self.pools is not None
        route = self.routes[backend]
        path, _, query = route.path.partition("?")
        resp = await self.pools.get(route.upstream, route.config).send(
            "POST", path, query, list(headers.items()), body, self._timeout)
        try:
            raw = await resp.read()  # read whole: the connection goes back to the endpoint's pool
        except BaseException:
            resp.close()
            raise
        resp.release()
        return resp.status, raw


_BACKEND_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def deep_merge(dst: JSON, src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        cur = dst.get(k)
        if isinstance(cur, dict) and isinstance(v, dict):
            deep_merge(cur, v)
        elif isinstance(cur, list) and isinstance(v, list) and len(cur) == len(v):
            for i, (a, b) in enumerate(zip(cur, v, strict=True)):
                if isinstance(a, dict) and isinstance(b, dict):
                    deep_merge(a, b)
                else:
                    cur[i] = b
        else:
            dst[k] = v


def _flatten(v: Any, p: ResponsePath, out: list[tuple[JSON, ResponsePath]]) -> None:
    if isinstance(v, dict):
        out.append((v, p))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _flatten(x, p + (i,), out)


def collect(data: JSON, path: Path, type_filter: str | None) -> list[tuple[JSON, ResponsePath]]:
    """The objects at ``path`` (lists flattened), with their concrete paths."""
    items: list[tuple[JSON, ResponsePath]] = [(data, ())]
    for key in path:
        nxt: list[tuple[JSON, ResponsePath]] = []
        for obj, p in items:
            _flatten(obj.get(key), p + (key,), nxt)
        items = nxt
    if type_filter is not None:
        items = [(o, p) for o, p in items if o.get(TYPENAME_ALIAS) == type_filter]
    return items


def partition_value(split_key: str | None, rep: Mapping[str, Any], variables: Mapping[str, Any],
                    headers: Mapping[str, str]) -> str | None:
    """The canary partition of one entity: ``key:NAME``, ``header:NAME`` or ``arg:NAME`` (a variable)."""
    if split_key is None:
        vals = [v for k, v in rep.items() if k != "__typename"]
        return str(vals[0]) if vals else None
    kind, name = split_key.split(":", 1)
    if kind == "header":
        return headers.get(name.lower())
    if kind == "arg":
        v = variables.get(name)
        return None if v is None else str(v)
    v = rep.get(name)
    return None if v is None else str(v)


@dataclass
class FetchTrace:
    """What one run sent: the fetches that went out, and those whose backend failed or answered
    with errors (the gateway records target-served fields from it, for guardrails and reports)."""

    ran: list[Fetch] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # fetch id -> why

    def record(self, f: Fetch, failure: str | None) -> None:
        self.ran.append(f)
        if failure is not None:
            self.failed[f.id] = failure

    def served_by(self) -> dict[str, str]:
        """Response path (``title.rating``, no list indices) -> the backend that resolved it and
        everything under it that is not named deeper. A canary split per entity that sent some
        entities to each side names both, comma-separated.

        >>> from strangler_proxy.graphql.planner import Fetch
        >>> t = FetchTrace()
        >>> t.record(Fetch(1, "legacy", (), "", (), response_keys=("title",)), None)
        >>> t.record(Fetch(2, "ratings", ("title",), "", (), response_keys=("rating",)), None)
        >>> t.served_by()
        {'title': 'legacy', 'title.rating': 'ratings'}
        """
        found: dict[str, set[str]] = {}
        for f in self.ran:
            for rk in f.response_keys:
                found.setdefault(".".join((*f.path, rk)), set()).add(f.backend)
        return {path: ",".join(sorted(found[path])) for path in sorted(found)}


@dataclass
class EntityJob:
    """One entity fetch of one level: its distinct representations and where each goes."""

    fetch: Fetch
    reps: list[JSON]
    targets: list[list[tuple[JSON, ResponsePath]]]  # per representation: the objects it fills


def entity_job(fetch: Fetch, data: JSON, variables: Mapping[str, Any], headers: Mapping[str, str]) -> EntityJob | None:
    assert fetch.keys is not None
    index: dict[bytes, int] = {}
    job = EntityJob(fetch, [], [])
    for obj, p in collect(data, fetch.path, fetch.type_filter):
        rep = fetch.keys.representation(obj)
        if rep is None:
            continue
        if fetch.split is not None and not on_side(fetch.split, rep, variables, headers):
            continue
        k = orjson.dumps(rep, option=orjson.OPT_SORT_KEYS)
        i = index.get(k)
        if i is None:
            i = index[k] = len(job.reps)
            job.reps.append(rep)
            job.targets.append([])
        job.targets[i].append((obj, p))
    return job if job.reps else None


def on_side(split: Split, rep: Mapping[str, Any], variables: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    part = partition_value(split.rule.partition_key, rep, variables, headers)
    return in_canary(split.rule, part) == split.canary_side


@dataclass
class Executor:
    """Runs plans; keeps the batch documents it has built (they depend only on the plan)."""

    client: BackendClient
    _batches: dict[tuple[int, ...], str] = field(default_factory=dict)

    async def run(self, plan: Plan, variables: Mapping[str, Any], headers: Mapping[str, str],
                  trace: FetchTrace | None = None) -> tuple[JSON, list[JSON]]:
        data: JSON = {}
        errors: list[JSON] = []
        await self.run_roots(plan.roots, data, errors, variables, headers, sequential=plan.sequential, trace=trace)
        await self.run_entities([c for f in plan.roots for c in f.children], data, errors, variables, headers,
                                trace=trace)
        return data, errors

    async def run_roots(self, roots: Sequence[Fetch], data: JSON, errors: list[JSON], variables: Mapping[str, Any],
                        headers: Mapping[str, str], *, sequential: bool = False, trace: FetchTrace | None = None) -> None:
        if sequential or len(roots) == 1:
            for f in roots:
                await self._root(f, data, errors, variables, headers, trace)
        else:
            await asyncio.gather(*(self._root(f, data, errors, variables, headers, trace) for f in roots))

    async def run_entities(self, level: Sequence[Fetch], data: JSON, errors: list[JSON],
                           variables: Mapping[str, Any], headers: Mapping[str, str], *,
                           trace: FetchTrace | None = None) -> None:
        while level:
            jobs = [j for j in (entity_job(f, data, variables, headers) for f in level) if j is not None]
            by_backend: dict[str, list[EntityJob]] = {}
            for j in jobs:
                by_backend.setdefault(j.fetch.backend, []).append(j)
            await asyncio.gather(*(self._batch(b, js, errors, variables, headers, trace) for b, js in by_backend.items()))
            level = [c for j in jobs for c in j.fetch.children]

    async def _root(self, f: Fetch, data: JSON, errors: list[JSON], variables: Mapping[str, Any],
                    headers: Mapping[str, str], trace: FetchTrace | None) -> None:
        try:
            body = await self.client.query(f.backend, f.document, _subset(variables, f.variables), headers)
        except BackendUnavailable as exc:
            if trace is not None:
                trace.record(f, exc.reason)
            for rk in f.response_keys:
                data.setdefault(rk, None)
                errors.append(backend_error(f.backend, exc.reason, (rk,)))
            return
        if trace is not None:
            trace.record(f, _first_error(body))
        got = body.get("data")
        if isinstance(got, dict):
            deep_merge(data, got)
        else:
            for rk in f.response_keys:
                data.setdefault(rk, None)
        for e in body.get("errors") or ():
            if isinstance(e, dict):
                errors.append(passed_on(e, f.backend))

    def _batch_document(self, jobs: Sequence[EntityJob]) -> str:
        ids = tuple(j.fetch.id for j in jobs)
        doc = self._batches.get(ids)
        if doc is None:
            defs: dict[str, None] = {}
            parts = []
            for i, j in enumerate(jobs):
                defs[f"$r{i}: [_Any!]!"] = None
                for d in j.fetch.variable_defs:
                    defs[d] = None
                parts.append(f"e{i}: _entities(representations: $r{i}) {{ {j.fetch.document} }}")
            doc = f"query({', '.join(defs)}) {{ {' '.join(parts)} }}"
            if len(self._batches) >= MAX_BATCH_DOCUMENTS:
                self._batches.clear()
            self._batches[ids] = doc
        return doc

    async def _batch(self, backend: str, jobs: list[EntityJob], errors: list[JSON],
                     variables: Mapping[str, Any], headers: Mapping[str, str], trace: FetchTrace | None) -> None:
        payload: JSON = {}
        for j in jobs:
            payload.update(_subset(variables, j.fetch.variables))
        for i, j in enumerate(jobs):
            payload[f"r{i}"] = j.reps
        try:
            body = await self.client.query(backend, self._batch_document(jobs), payload, headers)
        except BackendUnavailable as exc:
            for j in jobs:
                if trace is not None:
                    trace.record(j.fetch, exc.reason)
                for objs in j.targets:
                    for obj, p in objs:
                        for rk in j.fetch.response_keys:
                            obj.setdefault(rk, None)
                            errors.append(backend_error(backend, exc.reason, p + (rk,)))
            return
        if trace is not None:
            failure = _first_error(body)  # an error of a shared request counts against each of its fetches
            for j in jobs:
                trace.record(j.fetch, failure)
        got = body.get("data") or {}
        for i, j in enumerate(jobs):
            entities = got.get(f"e{i}") if isinstance(got, dict) else None
            for n, objs in enumerate(j.targets):
                ent = entities[n] if isinstance(entities, list) and n < len(entities) else None
                for obj, _ in objs:
                    if isinstance(ent, dict):
                        deep_merge(obj, ent)
                    else:
                        for rk in j.fetch.response_keys:
                            obj.setdefault(rk, None)
        for e in body.get("errors") or ():
            if isinstance(e, dict):
                errors.extend(_relocate(passed_on(e, backend), jobs))


def _first_error(body: JSON) -> str | None:
    errors = body.get("errors")
    if not errors:
        return None
    first = errors[0]
    return "graphql-error: " + str(first.get("message") if isinstance(first, dict) else first)[:200]


def _subset(variables: Mapping[str, Any], names: Sequence[str]) -> JSON:
    return {n: variables[n] for n in names if n in variables}


def _relocate(e: JSON, jobs: Sequence[EntityJob]) -> list[JSON]:
    """An error of a batched ``_entities`` call, moved to the paths of the objects it concerns."""
    path = e.get("path")
    base = dict(e)
    if not (isinstance(path, list) and len(path) >= 2 and isinstance(path[0], str) and path[0].startswith("e")
            and isinstance(path[1], int)):
        base.pop("path", None)
        return [base]
    try:
        job = jobs[int(path[0][1:])]
        objs = job.targets[path[1]]
    except (ValueError, IndexError):
        base.pop("path", None)
        return [base]
    return [{**base, "path": [*p, *path[2:]]} for _, p in objs]


def representation_key(keys: KeyFields, obj: Mapping[str, Any]) -> str | None:
    rep = keys.representation(obj)
    if rep is None:
        return None
    vals = [str(v) for k, v in rep.items() if k != "__typename"]
    return ",".join(vals)
