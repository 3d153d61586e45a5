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
keyed ``graphql:Type.field``, whose bodies are the two subtrees as JSON. The
comparator (the diff engine) turns each into a result, published to the same
listeners as the REST routes' results (store, guardrails, metrics, readiness).
Bounded: at most ``max_inflight`` background tasks; a batch that would exceed
that is dropped and counted, never queued without limit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from graphql import DocumentNode

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.comparator import Comparator, failure_reason
from strangler_proxy.diff.exchange import Exchange, ShadowPair
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX, ShadowResult, Verdict
from strangler_proxy.graphql.compose import ComposedSchema
from strangler_proxy.graphql.executor import Executor, FetchTrace, collect, on_side
from strangler_proxy.graphql.metrics import GraphQLMetrics
from strangler_proxy.graphql.ownership import FieldRule, Ownership
from strangler_proxy.graphql.planner import INTERNAL_PREFIX, SHADOW_ROOT, Fetch, ShadowSpec, plan_shadow

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
class _Request:
    """One client request's shadow of one field, waiting in a batch."""

    spec: ShadowSpec
    fetch: Fetch
    data: dict[str, Any]  # the merged answer the client was served from
    variables: Mapping[str, Any]
    headers: Mapping[str, str]
    served_latency_s: float


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
               variables: Mapping[str, Any], headers: Mapping[str, str], served_latency_s: float) -> None:
        chosen = [s for s in specs if s.rule.sample_rate >= 1 or self.sample() < s.rule.sample_rate]
        if not chosen:
            return
        lowered = {k.lower(): v for k, v in headers.items()}
        forwarded = tuple(lowered.get(h) for h in self.executor.client.forward_headers)
        for spec in chosen:
            try:
                fetch = self._fetch(composed, ownership, spec, document, operation_name)
                self._enqueue(_Request(spec, fetch, data, variables, lowered, served_latency_s), forwarded)
            except Exception:  # the client's answer never depends on the shadow path
                self._failed([spec])

    def _enqueue(self, request: _Request, forwarded: tuple[str | None, ...]) -> None:
        if request.spec.keys is None:  # a root field: its own arguments, its own fetch
            self._start(self._run_root(request), [request])
            return
        batch = self._batches.get(key := _batch_key(request.fetch, forwarded, request.variables))
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
        what is still running after ``timeout_s`` is cancelled, and said."""
        await asyncio.sleep(0)  # shadows of answers just given are launched once their task yields
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        if pending:
            log.warning("stopping: %d field-shadow tasks still running after %gs, cancelled", len(pending), timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def served(self, ownership: Ownership, trace: FetchTrace, latency_s: float) -> None:
        """Record each field a target served in this request (once per field): SERVED, or
        CANDIDATE_ERROR when its fetch failed or came back with errors. Nothing was compared;
        these count the target's traffic and errors for guardrails, readiness and reports,
        as the proxy's records of REST requests a target served do."""
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
                key=GRAPHQL_KEY_PREFIX + name, mode=rule.mode.value, at=now,
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

    def _failed(self, specs: list[ShadowSpec]) -> None:
        self.failed += len(specs)
        if self.metrics is not None:
            for spec in specs:
                self.metrics.shadow(spec.field_name, OUTCOME_FAILED)
        log.exception("shadowing %s failed", ", ".join(sorted({s.field_name for s in specs})))

    async def _run_root(self, r: _Request) -> None:
        try:
            rk = r.spec.response_key
            errors: list[dict[str, Any]] = []
            scratch: dict[str, Any] = {}
            start = time.perf_counter()
            await self.executor.run_roots((r.fetch,), scratch, errors, r.variables, r.headers)
            await self.executor.run_entities(list(r.fetch.children), scratch, errors, r.variables, r.headers)
            self._compare(r, None, orjson.dumps(strip_internal(r.data.get(rk))),
                          orjson.dumps(strip_internal(scratch.get(rk))), _errors_under(errors, (rk,)),
                          time.perf_counter() - start)
        except Exception:  # the shadow path must never disturb anything; log and go on
            self._failed([r.spec])

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            await self._batch(batch)
        except Exception:  # the shadow path must never disturb anything; log and go on
            self._failed([r.spec for r in batch.requests])

    async def _batch(self, batch: _Batch) -> None:
        index: dict[bytes, int] = {}  # each distinct entity is asked once
        entities: list[dict[str, Any]] = []  # their key fields; the answer is merged into them
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
                    entities.append({a: obj[a] for a, _ in spec.keys.fields})
                entries.append((r, i, k, obj.get(spec.response_key)))
        if not entries:
            return
        first = batch.requests[0]  # every request in a batch forwards the same headers and variables
        n = MAX_ENTITIES_PER_FETCH  # a big batch goes as several requests, in parallel
        chunks = [entities[at:at + n] for at in range(0, len(entities), n)]
        chunk_errors: list[list[dict[str, Any]]] = [[] for _ in chunks]
        start = time.perf_counter()
        await asyncio.gather(*(self.executor.run_entities([batch.fetch], {SHADOW_ROOT: chunk}, errs, first.variables,
                                                          first.headers)
                               for chunk, errs in zip(chunks, chunk_errors, strict=True)))
        latency = time.perf_counter() - start
        shadow_bodies: dict[int, bytes] = {}
        # Requests that saw the same entity with the same served value get the same comparison
        # (the shadow answer is one per entity): computed once, recorded for each request.
        compared: dict[tuple[Any, ...], ShadowResult] = {}
        for r, i, k, served in entries:
            spec = r.spec
            served_body = orjson.dumps(strip_internal(served))
            same = (spec.field_name, spec.mode, spec.served_by, spec.served_backend, spec.backend, k, served_body)
            earlier = compared.get(same)
            if earlier is not None:
                self._record(spec, _with_served_latency(earlier, spec, r.served_latency_s))
                continue
            if compared:
                await asyncio.sleep(0)  # many entities: let client requests run between comparisons
            shadow_body = shadow_bodies.get(i)
            if shadow_body is None:
                shadow_body = shadow_bodies[i] = orjson.dumps(strip_internal(entities[i].get(spec.response_key)))
            errors = _errors_under(chunk_errors[i // n], (SHADOW_ROOT, i % n))
            compared[same] = self._compare(r, k, served_body, shadow_body, errors, latency)

    def _compare(self, r: _Request, rep_key: bytes | None, served_body: bytes, shadow_body: bytes,
                 shadow_errors: list[dict[str, Any]], latency_s: float) -> ShadowResult:
        spec = r.spec
        served_ex = self._exchange(spec.served_backend, spec, served_body, [], r.served_latency_s)
        shadow_ex = self._exchange(spec.backend, spec, shadow_body, shadow_errors, latency_s)
        legacy, candidate = (served_ex, shadow_ex) if spec.served_by == "legacy" else (shadow_ex, served_ex)
        pair = ShadowPair(key=GRAPHQL_KEY_PREFIX + spec.field_name, mode=spec.mode, served_by=spec.served_by,  # type: ignore[arg-type]
                          legacy=legacy, candidate=candidate, partition=_partition_label(rep_key))
        result = self.comparator.compare(pair, self.rules_for(spec.field_name))
        self._record(spec, result)
        return result

    def _record(self, spec: ShadowSpec, result: ShadowResult) -> None:
        self.completed += 1
        if self.metrics is not None:
            self.metrics.shadow(spec.field_name, OUTCOME_COMPLETED)
        self.publish(result)

    def _exchange(self, backend: str, spec: ShadowSpec, body: bytes, errors: list[dict[str, Any]],
                  latency_s: float) -> Exchange:
        err = None
        if errors:
            err = f"{ERROR_GRAPHQL}: " + "; ".join(str(e.get("message")) for e in errors)[:300]
        return Exchange(upstream=backend, method="POST", target=f"{self.graphql_path}#{spec.field_name}",
                        status=200, body=body, latency_s=latency_s, error=err,
                        response_headers=(("content-type", "application/json"),))


def _with_served_latency(result: ShadowResult, spec: ShadowSpec, latency_s: float) -> ShadowResult:
    """Another request's record of the same comparison: its own served latency and time."""
    if spec.served_by == "legacy":
        return replace(result, legacy_latency_s=latency_s, at=time.time())
    return replace(result, candidate_latency_s=latency_s, at=time.time())


def _batch_key(fetch: Fetch, forwarded: tuple[str | None, ...], variables: Mapping[str, Any]) -> tuple[Any, ...]:
    """Shadows that can share one ``_entities`` request: same backend, same sub-query (the same
    text from any client query; with nested fetches of its own, the same plan), same forwarded
    headers, same values of the variables it and its nested fetches use."""
    names: set[str] = set()
    todo = [fetch]
    while todo:
        f = todo.pop()
        names.update(f.variables)
        todo.extend(f.children)
    used = orjson.dumps({n: variables[n] for n in names if n in variables}, option=orjson.OPT_SORT_KEYS)
    if fetch.children:
        return (fetch.backend, id(fetch), forwarded, used)
    return (fetch.backend, fetch.document, fetch.variable_defs, forwarded, used)


def _errors_under(errors: list[dict[str, Any]], prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    n = len(prefix)
    return [e for e in errors if isinstance(e.get("path"), list) and tuple(e["path"][:n]) == prefix]


def _partition_label(rep_json: bytes | None) -> str | None:
    if rep_json is None:
        return None
    rep = orjson.loads(rep_json)
    return ",".join(str(v) for k, v in rep.items() if k != "__typename")
