"""Shadowing GraphQL fields: the same field, for the same entities, from the other backend.

After the client's answer is built, the gateway hands the plan's
:class:`~.planner.ShadowSpec` s and the merged answer to :meth:`FieldShadower.launch`,
which never blocks and never fetches. An entity field's shadow joins a *batch*:
the shadows of every request in a short window (``batch_window_s``, default
50 ms, or until ``batch_size`` of them) that go to the same backend with the
same sub-query, forwarded headers and variables become one ``_entities``
request, each distinct entity asked once. That is what keeps shadowing cheap
for the client: under load, one shadow request serves many client requests,
so the shadow backend and the gateway do a fraction of a request's work per
client request. A root field's shadow is fetched on its own.

Each entity a client saw then becomes one :class:`~strangler_proxy.diff.exchange.ShadowPair`,
keyed ``graphql:Type.field`` (``graphql:Type.field@CELL`` for a request of a cell: its
results, guardrail window and rollback are that cell's), whose bodies are the two subtrees as JSON. The
comparator (the diff engine) turns each into a result, published to the same
listeners as the REST routes' results (store, guardrails, metrics, readiness).
Bounded: at most ``max_inflight`` background tasks; a batch that would exceed
that is dropped and counted, never queued without limit.

A mismatch is handed to the proxy's :class:`~strangler_proxy.diff.recheck.Rechecker`
(when it has one): after ``compare.recheck_after_s`` the field is fetched again
from the backend that served it and from the shadow backend, for that one
entity (or root field), and the result is recorded as ``transient`` when they
then agree. Field shadows are always reads (only queries are shadowed), so
every field is rechecked; requests of one batch that saw the same comparison
share one recheck.

With cells, a request's shadows go to its cell's backends (``cell_executors``)
and batch only with requests of the same cell.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import orjson
from graphql import DocumentNode

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.comparator import Comparator, failure_reason
from strangler_proxy.diff.exchange import Exchange, ShadowPair
from strangler_proxy.diff.recheck import Rechecker, recheck_delay
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX, ShadowResult, Verdict
from strangler_proxy.graphql.compose import ComposedSchema
from strangler_proxy.graphql.executor import Executor, FetchTrace, collect, on_side
from strangler_proxy.graphql.metrics import GraphQLMetrics
from strangler_proxy.graphql.ownership import FieldRule, Ownership
from strangler_proxy.graphql.planner import INTERNAL_PREFIX, SHADOW_ROOT, Fetch, ShadowSpec, plan_shadow
from strangler_proxy.routing.cells import scoped

log = logging.getLogger("strangler.graphql.shadow")

DEFAULT_MAX_INFLIGHT = 64
DEFAULT_BATCH_WINDOW_S = 0.05
DEFAULT_BATCH_SIZE = 100
MAX_ENTITIES_PER_FETCH = 500  # representations in one shadow _entities request
MAX_SHADOW_PLANS = 4096  # cached shadow sub-plans (one per shadowed field occurrence of a cached plan)
ERROR_GRAPHQL = "graphql-error"
OUTCOME_COMPLETED = "completed"  # compared and published (one per entity)
OUTCOME_DROPPED = "dropped"  # too many shadows in flight
OUTCOME_FAILED = "failed"  # the shadow task raised (logged)


def strip_internal(v: Any) -> Any:
    """A subtree without the planner's ``_gw_`` fields (what the client would see of it)."""
    if isinstance(v, dict):
        return {k: strip_internal(x) for k, x in v.items() if not k.startswith(INTERNAL_PREFIX)}
    if isinstance(v, list):
        return [strip_internal(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class _Operation:
    """What a client request's shadows were planned from (a recheck plans the served side from it)."""

    composed: ComposedSchema
    ownership: Ownership
    document: DocumentNode
    operation_name: str | None


@dataclass(frozen=True, slots=True)
class _Request:
    """One client request's shadow of one field, waiting in a batch."""

    spec: ShadowSpec
    fetch: Fetch
    data: dict[str, Any]  # the merged answer the client was served from
    variables: Mapping[str, Any]
    headers: Mapping[str, str]
    served_latency_s: float
    operation: _Operation
    cell: str | None  # the request's cell (its backends, its results' names); None without cells


@dataclass(frozen=True, slots=True)
class _Answer:
    """One side's answer for one field occurrence: its subtree as JSON, the errors under it, the time."""

    body: bytes
    errors: list[dict[str, Any]]
    latency_s: float


@dataclass
class _Batch:
    """Shadows bound for one backend with the same sub-query, forwarded headers and variables."""

    fetch: Fetch  # the first request's; the others' sub-query is the same text
    requests: list[_Request] = field(default_factory=list)


@dataclass
class FieldShadower:
    """Runs field shadows in the background, batched across requests (see the module docstring)."""

    executor: Executor
    comparator: Comparator
    publish: Callable[[ShadowResult], None]
    rules_for: Callable[[str], CompareConfig]  # "Type.field" -> compare rules
    graphql_path: str = "/graphql"
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S  # 0: every request's shadows go on their own
    batch_size: int = DEFAULT_BATCH_SIZE  # a batch is sent once it holds this many requests
    sample: Callable[[], float] = random.random
    metrics: GraphQLMetrics | None = None
    rechecker: Rechecker | None = None  # the proxy's (shared with the REST shadow path); None: no rechecks
    cell_executors: Mapping[str, Executor] = field(default_factory=dict)  # per cell: its backends
    dropped: int = 0
    completed: int = 0
    failed: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _plans: dict[int, tuple[ShadowSpec, Fetch]] = field(default_factory=dict)
    _batches: dict[tuple[Any, ...], _Batch] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def reset(self) -> None:
        """Forget sub-plans (the ownership changed). Batches already formed are sent as planned."""
        self._plans = {}

    def launch(self, composed: ComposedSchema, ownership: Ownership, specs: tuple[ShadowSpec, ...],
               document: DocumentNode, operation_name: str | None, data: dict[str, Any],
               variables: Mapping[str, Any], headers: Mapping[str, str], served_latency_s: float,
               cell: str | None = None) -> None:
        chosen = [s for s in specs if s.rule.sample_rate >= 1 or self.sample() < s.rule.sample_rate]
        if not chosen:
            return
        lowered = {k.lower(): v for k, v in headers.items()}
        forwarded = tuple(lowered.get(h) for h in self.executor.client.forward_headers)
        operation = _Operation(composed, ownership, document, operation_name)
        for spec in chosen:
            try:
                fetch = self._fetch(composed, ownership, spec, document, operation_name)
                self._enqueue(_Request(spec, fetch, data, variables, lowered, served_latency_s, operation, cell),
                              forwarded)
            except Exception:  # the client's answer never depends on the shadow path
                self._failed([spec])

    def _enqueue(self, request: _Request, forwarded: tuple[str | None, ...]) -> None:
        if request.spec.keys is None:  # a root field: its own arguments, its own fetch
            self._start(self._run_root(request), [request])
            return
        batch = self._batches.get(key := _batch_key(request.fetch, forwarded, request.variables, request.cell))
        if batch is None:
            batch = self._batches[key] = _Batch(request.fetch)
        batch.requests.append(request)
        if len(batch.requests) >= self.batch_size or self.batch_window_s <= 0:
            del self._batches[key]
            self._start(self._run_batch(batch), batch.requests)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.batch_window_s, self._flush)

    def _flush(self) -> None:
        """Send every batch waiting (the window is over)."""
        self._timer = None
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            self._start(self._run_batch(batch), batch.requests)

    def _start(self, work: Coroutine[Any, Any, None], requests: list[_Request]) -> None:
        if len(self._tasks) >= self.max_inflight:
            work.close()
            self.dropped += len(requests)
            if self.metrics is not None:
                for r in requests:
                    self.metrics.shadow(r.spec.field_name, OUTCOME_DROPPED)
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Send the batches waiting and wait for every shadow in flight (tests, graceful stop);
        what is still running after ``timeout_s`` is cancelled, and said. Rechecks are waited for
        within the same time (the rechecker's owner, the shadow dispatcher, stops them)."""
        start = time.monotonic()
        await asyncio.sleep(0)  # shadows of answers just given are launched once their task yields
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            if pending:
                log.warning("stopping: %d field-shadow tasks still running after %gs, cancelled", len(pending),
                            timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self.rechecker is not None:
            try:
                await self.rechecker.drain(timeout_s - (time.monotonic() - start))
            except TimeoutError as exc:
                log.warning("stopping: %s", exc)

    def served(self, ownership: Ownership, trace: FetchTrace, latency_s: float, cell: str | None = None) -> None:
        """Record each field a target served in this request (once per field): SERVED, or
        CANDIDATE_ERROR when its fetch failed or came back with errors. Nothing was compared;
        these count the target's traffic and errors for guardrails, readiness and reports,
        as the proxy's records of REST requests a target served do (named per cell, with cells)."""
        fields: dict[str, tuple[FieldRule, str | None]] = {}  # name -> rule, first failure of any of its fetches
        for f in trace.ran:
            failure = trace.failed.get(f.id)
            for name in f.fields:
                rule = ownership.served_by_target(name, f.backend)
                if rule is not None and (name not in fields or fields[name][1] is None):
                    fields[name] = (rule, failure)
        now = time.time()
        for name, (rule, failure) in fields.items():
            self.publish(ShadowResult(
                key=GRAPHQL_KEY_PREFIX + scoped(name, cell), mode=rule.mode.value, at=now,
                verdict=Verdict.CANDIDATE_ERROR if failure else Verdict.SERVED,
                candidate_status=200, candidate_latency_s=latency_s,
                reason=None if failure is None else failure_reason("candidate", 200, failure), method="POST",
                target=f"{self.graphql_path}#{name}"))

    def _fetch(self, composed: ComposedSchema, ownership: Ownership, spec: ShadowSpec, document: DocumentNode,
               operation_name: str | None) -> Fetch:
        got = self._plans.get(id(spec))
        if got is None or got[0] is not spec:
            got = (spec, plan_shadow(composed, ownership, spec, document, operation_name))
            if len(self._plans) >= MAX_SHADOW_PLANS:  # specs of plans the gateway has evicted linger
                self._plans.clear()
            self._plans[id(spec)] = got
        return got[1]

    def _executor(self, cell: str | None) -> Executor:
        """The executor towards a cell's backends (the default one without cells)."""
        return self.executor if cell is None else self.cell_executors.get(cell, self.executor)

    def _failed(self, specs: list[ShadowSpec]) -> None:
        self.failed += len(specs)
        if self.metrics is not None:
            for spec in specs:
                self.metrics.shadow(spec.field_name, OUTCOME_FAILED)
        log.exception("shadowing %s failed", ", ".join(sorted({s.field_name for s in specs})))

    async def _run_root(self, r: _Request) -> None:
        try:
            shadow = await self._ask(r, r.fetch, None)
            served = _Answer(orjson.dumps(strip_internal(r.data.get(r.spec.response_key))), [], r.served_latency_s)
            self._settle(r.spec, [self._compare(r, None, served, shadow)], partial(self._compare_again, r, None, None))
        except Exception:  # the shadow path must never disturb anything; log and go on
            self._failed([r.spec])

    async def _ask(self, r: _Request, fetch: Fetch, entity: dict[str, Any] | None) -> _Answer:
        """``fetch`` for one entity (its key fields), or as the root fetch when ``entity`` is None."""
        rk = r.spec.response_key
        errors: list[dict[str, Any]] = []
        executor = self._executor(r.cell)
        start = time.perf_counter()
        if entity is None:
            scratch: dict[str, Any] = {}
            await executor.run_roots((fetch,), scratch, errors, r.variables, r.headers)
            await executor.run_entities(list(fetch.children), scratch, errors, r.variables, r.headers)
            value, under = scratch.get(rk), (rk,)
        else:
            objects = [dict(entity)]
            await executor.run_entities([fetch], {SHADOW_ROOT: objects}, errors, r.variables, r.headers)
            value, under = objects[0].get(rk), (SHADOW_ROOT, 0)
        return _Answer(orjson.dumps(strip_internal(value)), _errors_under(errors, under), time.perf_counter() - start)

    async def _compare_again(self, r: _Request, rep_key: bytes | None, entity: dict[str, Any] | None) -> ShadowResult:
        """A recheck: the field fetched again from the backend that served it and from the shadow
        backend, at the same time, and compared with the same comparator and rules."""
        op, spec = r.operation, r.spec
        served_fetch = plan_shadow(op.composed, op.ownership, replace(spec, backend=spec.served_backend), op.document,
                                   op.operation_name)
        served, shadow = await asyncio.gather(self._ask(r, served_fetch, entity), self._ask(r, r.fetch, entity))
        return self._compare(r, rep_key, served, shadow)

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            await self._batch(batch)
        except Exception:  # the shadow path must never disturb anything; log and go on
            self._failed([r.spec for r in batch.requests])

    async def _batch(self, batch: _Batch) -> None:
        index: dict[bytes, int] = {}  # each distinct entity is asked once
        entities: list[dict[str, Any]] = []  # their key fields; the answer is merged into them
        keyed: list[dict[str, Any]] = []  # the same key fields, untouched (what a recheck asks for)
        entries: list[tuple[_Request, int, bytes, Any]] = []  # per request and entity: index, key, served
        for r in batch.requests:
            spec = r.spec
            assert spec.keys is not None
            seen: set[bytes] = set()  # an entity that appears twice in one answer is compared once
            for obj, _ in collect(r.data, spec.path, spec.type_filter):
                rep = spec.keys.representation(obj)
                if rep is None or (spec.split is not None and not on_side(spec.split, rep, r.variables, r.headers)):
                    continue
                k = orjson.dumps(rep, option=orjson.OPT_SORT_KEYS)
                if k in seen:
                    continue
                seen.add(k)
                i = index.get(k)
                if i is None:
                    i = index[k] = len(entities)
                    keyed.append({a: obj[a] for a, _ in spec.keys.fields})
                    entities.append(dict(keyed[-1]))
                entries.append((r, i, k, obj.get(spec.response_key)))
        if not entries:
            return
        first = batch.requests[0]  # every request in a batch forwards the same headers and variables, same cell
        executor = self._executor(first.cell)
        n = MAX_ENTITIES_PER_FETCH  # a big batch goes as several requests, in parallel
        chunks = [entities[at:at + n] for at in range(0, len(entities), n)]
        chunk_errors: list[list[dict[str, Any]]] = [[] for _ in chunks]
        start = time.perf_counter()
        await asyncio.gather(*(executor.run_entities([batch.fetch], {SHADOW_ROOT: chunk}, errs, first.variables,
                                                     first.headers)
                               for chunk, errs in zip(chunks, chunk_errors, strict=True)))
        latency = time.perf_counter() - start
        shadow_bodies: dict[int, bytes] = {}
        # Requests that saw the same entity with the same served value get the same comparison
        # (the shadow answer is one per entity): computed once, recorded for each request.
        compared: dict[tuple[Any, ...], list[ShadowResult]] = {}
        firsts: dict[tuple[Any, ...], tuple[_Request, bytes, dict[str, Any]]] = {}
        for r, i, k, served in entries:
            spec = r.spec
            served_body = orjson.dumps(strip_internal(served))
            same = (spec.field_name, spec.mode, spec.served_by, spec.served_backend, spec.backend, k, served_body)
            earlier = compared.get(same)
            if earlier is not None:
                earlier.append(_with_served_latency(earlier[0], spec, r.served_latency_s))
                continue
            if compared:
                await asyncio.sleep(0)  # many entities: let client requests run between comparisons
            shadow_body = shadow_bodies.get(i)
            if shadow_body is None:
                shadow_body = shadow_bodies[i] = orjson.dumps(strip_internal(entities[i].get(spec.response_key)))
            errors = _errors_under(chunk_errors[i // n], (SHADOW_ROOT, i % n))
            compared[same] = [self._compare(r, k, _Answer(served_body, [], r.served_latency_s),
                                            _Answer(shadow_body, errors, latency))]
            firsts[same] = (r, k, keyed[i])
        for same, results in compared.items():
            r, k, entity = firsts[same]
            self._settle(r.spec, results, partial(self._compare_again, r, k, entity))

    def _compare(self, r: _Request, rep_key: bytes | None, served: _Answer, shadow: _Answer) -> ShadowResult:
        spec = r.spec
        served_ex = self._exchange(spec.served_backend, spec, served)
        shadow_ex = self._exchange(spec.backend, spec, shadow)
        legacy, candidate = (served_ex, shadow_ex) if spec.served_by == "legacy" else (shadow_ex, served_ex)
        pair = ShadowPair(key=GRAPHQL_KEY_PREFIX + scoped(spec.field_name, r.cell), mode=spec.mode,
                          served_by=spec.served_by,  # type: ignore[arg-type]
                          legacy=legacy, candidate=candidate, partition=_partition_label(rep_key))
        return self.comparator.compare(pair, self.rules_for(spec.field_name))

    def _settle(self, spec: ShadowSpec, results: list[ShadowResult],
                compare_again: Callable[[], Coroutine[Any, Any, ShadowResult]]) -> None:
        """Record one comparison (once per request that saw it): at once, or once a recheck decides."""
        self.completed += len(results)
        if self.metrics is not None:
            for _ in results:
                self.metrics.shadow(spec.field_name, OUTCOME_COMPLETED)
        rechecker = self.rechecker
        after = None if rechecker is None else recheck_delay(results[0], self.rules_for(spec.field_name), safe=True)
        if rechecker is None or after is None:
            for result in results:
                self.publish(result)
        else:
            rechecker.submit(results, after, compare_again)

    def _exchange(self, backend: str, spec: ShadowSpec, answer: _Answer) -> Exchange:
        err = None
        if answer.errors:
            err = f"{ERROR_GRAPHQL}: " + "; ".join(str(e.get("message")) for e in answer.errors)[:300]
        return Exchange(upstream=backend, method="POST", target=f"{self.graphql_path}#{spec.field_name}",
                        status=200, body=answer.body, latency_s=answer.latency_s, error=err,
                        response_headers=(("content-type", "application/json"),))


def _with_served_latency(result: ShadowResult, spec: ShadowSpec, latency_s: float) -> ShadowResult:
    """Another request's record of the same comparison: its own served latency and time."""
    if spec.served_by == "legacy":
        return replace(result, legacy_latency_s=latency_s, at=time.time())
    return replace(result, candidate_latency_s=latency_s, at=time.time())


def _batch_key(fetch: Fetch, forwarded: tuple[str | None, ...], variables: Mapping[str, Any],
               cell: str | None) -> tuple[Any, ...]:
    """Shadows that can share one ``_entities`` request: same cell, same backend, same sub-query
    (the same text from any client query; with nested fetches of its own, the same plan), same
    forwarded headers, same values of the variables it and its nested fetches use."""
    names: set[str] = set()
    todo = [fetch]
    while todo:
        f = todo.pop()
        names.update(f.variables)
        todo.extend(f.children)
    used = orjson.dumps({n: variables[n] for n in names if n in variables}, option=orjson.OPT_SORT_KEYS)
    if fetch.children:
        return (cell, fetch.backend, id(fetch), forwarded, used)
    return (cell, fetch.backend, fetch.document, fetch.variable_defs, forwarded, used)


def _errors_under(errors: list[dict[str, Any]], prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    n = len(prefix)
    return [e for e in errors if isinstance(e.get("path"), list) and tuple(e["path"][:n]) == prefix]


def _partition_label(rep_json: bytes | None) -> str | None:
    if rep_json is None:
        return None
    rep = orjson.loads(rep_json)
    return ",".join(str(v) for k, v in rep.items() if k != "__typename")
