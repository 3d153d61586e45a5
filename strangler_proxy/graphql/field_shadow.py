"""Shadowing GraphQL fields: the same field, for the same entities, from the other backend.

After the client's answer is built, the gateway hands the plan's
:class:`~.planner.ShadowSpec` s and the merged answer to :meth:`FieldShadower.launch`,
which never blocks: it starts one bounded background task (or drops and counts
when too many are in flight). The task fetches the field from the shadow
backend for the entities the client saw, and builds one
:class:`~strangler_proxy.exchange.ShadowPair` per entity, keyed
``graphql:Type.field``, whose bodies are the two subtrees as JSON. The
comparator (the diff engine) turns each into a result, published to the same
listeners as the REST routes' results (store, guardrails, metrics, readiness).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from graphql import DocumentNode

from strangler_proxy.config import CompareConfig
from strangler_proxy.exchange import Exchange, ShadowPair
from strangler_proxy.graphql.compose import ComposedSchema
from strangler_proxy.graphql.executor import Executor, collect, on_side
from strangler_proxy.graphql.metrics import GraphQLMetrics
from strangler_proxy.graphql.ownership import Ownership
from strangler_proxy.graphql.planner import INTERNAL_PREFIX, SHADOW_ROOT, Fetch, ShadowSpec, plan_shadow
from strangler_proxy.result import GRAPHQL_KEY_PREFIX, ShadowResult

log = logging.getLogger("strangler.graphql.shadow")

DEFAULT_MAX_INFLIGHT = 64
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


class PairComparator(Protocol):
    """Anything with ``compare(pair, rules) -> ShadowResult`` (the diff engine's DiffComparator)."""

    def compare(self, pair: ShadowPair, rules: CompareConfig) -> ShadowResult: ...


@dataclass
class FieldShadower:
    """Runs field shadows in the background; bounded by ``max_inflight`` tasks."""

    executor: Executor
    comparator: PairComparator
    publish: Callable[[ShadowResult], None]
    rules_for: Callable[[str], CompareConfig]  # "Type.field" -> compare rules
    graphql_path: str = "/graphql"
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    sample: Callable[[], float] = random.random
    metrics: GraphQLMetrics | None = None
    dropped: int = 0
    completed: int = 0
    failed: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _plans: dict[int, tuple[ShadowSpec, Fetch]] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget sub-plans (the ownership changed)."""
        self._plans = {}

    def launch(self, composed: ComposedSchema, ownership: Ownership, specs: tuple[ShadowSpec, ...],
               document: DocumentNode, operation_name: str | None, data: dict[str, Any],
               variables: Mapping[str, Any], headers: Mapping[str, str], served_latency_s: float) -> None:
        chosen = [s for s in specs if s.rule.sample_rate >= 1 or self.sample() < s.rule.sample_rate]
        if not chosen:
            return
        if len(self._tasks) >= self.max_inflight:
            self.dropped += len(chosen)
            if self.metrics is not None:
                for spec in chosen:
                    self.metrics.shadow(spec.field_name, OUTCOME_DROPPED)
            return
        task = asyncio.get_running_loop().create_task(self._run(
            composed, ownership, chosen, document, operation_name, data, dict(variables),
            {k.lower(): v for k, v in headers.items()}, served_latency_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for the shadows in flight (tests, graceful stop)."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*list(self._tasks), return_exceptions=True), timeout_s)

    async def _run(self, composed: ComposedSchema, ownership: Ownership, specs: list[ShadowSpec],
                   document: DocumentNode, operation_name: str | None, data: dict[str, Any],
                   variables: dict[str, Any], headers: dict[str, str], served_latency_s: float) -> None:
        for spec in specs:
            try:
                await self._one(composed, ownership, spec, document, operation_name, data, variables, headers,
                                served_latency_s)
            except Exception:  # the shadow path must never disturb anything; log and go on
                self.failed += 1
                if self.metrics is not None:
                    self.metrics.shadow(spec.field_name, OUTCOME_FAILED)
                log.exception("shadowing %s failed", spec.field_name)

    def _fetch(self, composed: ComposedSchema, ownership: Ownership, spec: ShadowSpec, document: DocumentNode,
               operation_name: str | None) -> Fetch:
        got = self._plans.get(id(spec))
        if got is None or got[0] is not spec:
            got = (spec, plan_shadow(composed, ownership, spec, document, operation_name))
            self._plans[id(spec)] = got
        return got[1]

    async def _one(self, composed: ComposedSchema, ownership: Ownership, spec: ShadowSpec,
                   document: DocumentNode, operation_name: str | None, data: dict[str, Any],
                   variables: dict[str, Any], headers: dict[str, str], served_latency_s: float) -> None:
        fetch = self._fetch(composed, ownership, spec, document, operation_name)
        rk = spec.response_key
        errors: list[dict[str, Any]] = []
        start = time.perf_counter()
        if spec.keys is None:
            scratch: dict[str, Any] = {}
            await self.executor.run_roots((fetch,), scratch, errors, variables, headers)
            await self.executor.run_entities(list(fetch.children), scratch, errors, variables, headers)
            pairs = [(None, data.get(rk), scratch.get(rk), _errors_under(errors, (rk,)))]
        else:
            objs = [o for o, _ in collect(data, spec.path, spec.type_filter)]
            if spec.split is not None:
                objs = [o for o in objs if (rep := spec.keys.representation(o)) is not None
                        and on_side(spec.split, rep, variables, headers)]
            seen: dict[str, dict[str, Any]] = {}
            for o in objs:
                rep = spec.keys.representation(o)
                if rep is not None:
                    seen.setdefault(orjson.dumps(rep, option=orjson.OPT_SORT_KEYS).decode(), o)
            if not seen:
                return
            scratch = {SHADOW_ROOT: [{a: o[a] for a, _ in spec.keys.fields} for o in seen.values()]}
            await self.executor.run_entities([fetch], scratch, errors, variables, headers)
            pairs = []
            for i, (k, o) in enumerate(seen.items()):
                pairs.append((k, o.get(rk), scratch[SHADOW_ROOT][i].get(rk),
                              _errors_under(errors, (SHADOW_ROOT, i))))
        latency = time.perf_counter() - start
        served_errors: list[dict[str, Any]] = []
        for n, (partition, served_v, shadow_v, shadow_errors) in enumerate(pairs):
            if n:
                await asyncio.sleep(0)  # many entities: let client requests run between comparisons
            served_ex = self._exchange(spec.served_backend, spec, served_v, served_errors, served_latency_s)
            shadow_ex = self._exchange(spec.backend, spec, shadow_v, shadow_errors, latency)
            legacy, candidate = (served_ex, shadow_ex) if spec.served_by == "legacy" else (shadow_ex, served_ex)
            pair = ShadowPair(key=GRAPHQL_KEY_PREFIX + spec.field_name, mode=spec.mode, served_by=spec.served_by,  # type: ignore[arg-type]
                              legacy=legacy, candidate=candidate, partition=_partition_label(partition))
            result = self.comparator.compare(pair, self.rules_for(spec.field_name))
            self.completed += 1
            if self.metrics is not None:
                self.metrics.shadow(spec.field_name, OUTCOME_COMPLETED)
            self.publish(result)

    def _exchange(self, backend: str, spec: ShadowSpec, value: Any, errors: list[dict[str, Any]],
                  latency_s: float) -> Exchange:
        body = orjson.dumps(strip_internal(value))
        err = None
        if errors:
            err = f"{ERROR_GRAPHQL}: " + "; ".join(str(e.get("message")) for e in errors)[:300]
        return Exchange(upstream=backend, method="POST", target=f"{self.graphql_path}#{spec.field_name}",
                        status=200, body=body, latency_s=latency_s, error=err,
                        response_headers=(("content-type", "application/json"),))


def _errors_under(errors: list[dict[str, Any]], prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    n = len(prefix)
    return [e for e in errors if isinstance(e.get("path"), list) and tuple(e["path"][:n]) == prefix]


def _partition_label(rep_json: str | None) -> str | None:
    if rep_json is None:
        return None
    rep = orjson.loads(rep_json)
    return ",".join(str(v) for k, v in rep.items() if k != "__typename")
