"""The gateway: the proxy's ``/graphql``, answering from the backends that own each field.

    parse + validate (cached by query text; invalid -> 400, no backend called)
      -> plan (cached by document, operation, ownership version, root canary choice)
      -> execute (executor.py) -> shape (shaping.py) -> respond
      -> hand the plan's shadows to the FieldShadower (background, bounded)

Every error a client gets carries ``extensions.code`` (:mod:`.codes`). Which
backend served which field (``extensions.strangler.servedBy``) and the
``serviceName`` of backend errors are told only to those allowed to know
(strangler_proxy/disclosure.py); everyone else never sees a backend's name.

The composed schema and the :class:`~.ownership.Ownership` are immutable and
swapped whole (:meth:`GraphQLGateway.set_ownership`), so a request in flight
keeps the table it started with.

    gateway = await GraphQLGateway.create(config, session)   # composes, refuses conflicts
    app.router.add_route("*", config.graphql.path, gateway.handle)

With cells (``cells:``), the proxy hands :meth:`GraphQLGateway.respond` its
:class:`~strangler_proxy.routing.cells.CellTable`: the request's partition key
(a header, query parameter or cookie, or ``arg:NAME``: the argument ``NAME`` of
the operation's root fields) picks one cell (:meth:`GraphQLGateway.place`);
every fetch of the request then goes to that cell's copy of its backend's
upstream (``ratings@c2``), each field in that cell's mode (``Title.rating@c2``
when the cell has an override of its own), and its shadow results are named
``graphql:Title.rating@c2``. Root fields that give different keys, or a
request without a key while ``cells.unkeyed`` is ``refuse``, get a 400 and
nothing is fetched. The schema is composed from the first cell's backends:
cells are copies of one stack.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import graphql
import orjson
from aiohttp import web
from graphql import DocumentNode, GraphQLError, OperationType
from prometheus_client import CollectorRegistry

from strangler_proxy.config import StranglerConfig
from strangler_proxy.disclosure import may_disclose
from strangler_proxy.errors import GraphQLGatewayError
from strangler_proxy.graphql.codes import (
    BAD_REQUEST,
    BAD_USER_INPUT,
    CELL_NOT_SERVED,
    INTERNAL_SERVER_ERROR,
    OPERATION_RESOLUTION_FAILURE,
    PARSE_FAILED,
    PERSISTED_QUERY_NOT_SUPPORTED,
    VALIDATION_FAILED,
    Refused,
    coded,
    error,
    finish,
)
from strangler_proxy.graphql.compose import ComposedSchema, compose, load_sdls
from strangler_proxy.graphql.executor import BackendClient, BackendPools, BackendRoute, Executor, FetchTrace
from strangler_proxy.graphql.field_shadow import FieldShadower
from strangler_proxy.graphql.metrics import GraphQLMetrics
from strangler_proxy.graphql.ownership import FieldRule, Ownership, RouteStateLike, in_canary
from strangler_proxy.graphql.planner import (
    Plan,
    operation_of,
    plan_operation,
    root_argument_values,
    root_canary_fields,
)
from strangler_proxy.graphql.projection import Projector
from strangler_proxy.graphql.shaping import shape
from strangler_proxy.routing.cells import CellTable, cell_upstream

log = logging.getLogger("strangler.graphql")

JSON = dict[str, Any]
DEFAULT_DOCUMENT_CACHE = 1000
DEFAULT_PLAN_CACHE = 1000
_JSON_HEADERS = {"Content-Type": "application/json"}
_ALLOW = {"Allow": "GET, POST, OPTIONS"}
SHAPED_COMPILED = "compiled"
SHAPED_GRAPHQL_CORE = "graphql-core"
ERROR_ID_BYTES = 6  # an internal error's id, in the answer and in the log line with the detail
MAX_KEYS_SHOWN = 5  # conflicting partition keys named in the error


@dataclass
class _Parsed:
    """A query text parsed and validated once."""

    document: DocumentNode | None
    errors: list[JSON]


@dataclass
class _Prepared:
    """Per (query text, operation): the operation and its plans per canary choice."""

    op: graphql.OperationDefinitionNode
    canary_roots: list[FieldRule]
    projector: Projector
    plans: dict[tuple[bool, ...], Plan] = field(default_factory=dict)


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Any) -> Any:
        v = self.get(key)
        if v is not None:
            self.move_to_end(key)
        return v

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


class GraphQLGateway:
    """One composed schema in front of many GraphQL backends (see the module docstring)."""

    def __init__(self, composed: ComposedSchema, ownership: Ownership, executor: Executor, *,
                 shadower: FieldShadower | None = None, document_cache: int = DEFAULT_DOCUMENT_CACHE,
                 plan_cache: int = DEFAULT_PLAN_CACHE, compiled_shapes: bool = True,
                 metrics: GraphQLMetrics | None = None, cors_origins: tuple[str, ...] = (),
                 config: StranglerConfig | None = None, cell_executors: Mapping[str, Executor] | None = None
                 ) -> None:
        ownership.check(composed)
        self.composed = composed
        self.ownership = ownership
        self.executor = executor
        self.shadower = shadower
        self._documents = _LRU(document_cache)
        self._plans = _LRU(plan_cache)
        self.compiled_shapes = compiled_shapes  # False: every answer is shaped by graphql-core (tests compare)
        self.metrics = metrics if metrics is not None else GraphQLMetrics()
        self.cors_origins = frozenset(cors_origins)  # browser origins allowed to call (CORS); "*": any
        # Who may learn which backend served what, when handle() is not told by the proxy
        # (mounted on its own): this config's graphql.expose_served_by and admin tokens. None: nobody.
        self.config = config
        # With cells: per cell, the executor towards that cell's backends (``executor`` is the first's).
        self.cell_executors: Mapping[str, Executor] = cell_executors or {}
        self.cells = CellTable.build(config.cells) if config is not None else None  # handle()'s, mounted alone

    @classmethod
    async def create(cls, config: StranglerConfig, session: aiohttp.ClientSession, *,
                     overrides: Mapping[str, RouteStateLike] | None = None,
                     shadower_args: Mapping[str, Any] | None = None,
                     compiled_shapes: bool = True, registry: CollectorRegistry | None = None,
                     sdl_wait_s: float | None = None, pools: BackendPools | None = None) -> GraphQLGateway:
        """Fetch every backend's SDL (or read its ``sdl_file``), compose, check the field rules.

        Raises :class:`GraphQLGatewayError` (the proxy must refuse to start) on conflicts, and
        its :class:`~strangler_proxy.errors.BackendSDLUnavailable` when a backend gave no SDL within
        ``sdl_wait_s`` (default ``graphql.sdl_wait_s``).
        ``shadower_args``: ``comparator``, ``publish``, ``rules_for`` (and optionally ``max_inflight``).
        ``registry``: where the gateway's metrics go (the proxy runtime's; default a private one).
        ``pools``: the proxy's endpoint pools (``dataplane.pool.Upstreams``, with their own limits):
        each backend fetch then chooses an endpoint of its upstream, as a REST request does;
        without, fetches go to each upstream's first endpoint over ``session``.
        With cells, the SDL comes from the first cell's backends (every cell runs the same stack),
        and each cell gets an executor towards its own copies of the backends' upstreams.
        """
        gql = config.graphql
        if gql.legacy_backend not in gql.backends:
            raise GraphQLGatewayError(f"graphql.legacy_backend {gql.legacy_backend!r} is not in graphql.backends")
        cells = CellTable.build(config.cells)
        cell_names: tuple[str | None, ...] = (None,) if cells is None else cells.names

        def upstreams_in(cell: str | None) -> dict[str, str]:
            """backend -> the upstream its fetches go to in ``cell``."""
            return {name: cell_upstream(config.upstreams, b.upstream, cell) for name, b in gql.backends.items()}

        first = upstreams_in(cell_names[0])
        urls = {name: config.upstreams[first[name]].primary_url + b.path for name, b in gql.backends.items()}
        sdls = await load_sdls(session, {n: (urls[n], b.sdl_file) for n, b in gql.backends.items()},
                               wait_s=gql.sdl_wait_s if sdl_wait_s is None else sdl_wait_s,
                               headers={n: dict(config.upstreams[first[n]].headers.resolved())
                                        for n in gql.backends})
        composed = compose(sdls, legacy=gql.legacy_backend)
        timeout = max((config.upstreams[up].timeout_s for up in first.values()), default=30.0)
        metrics = GraphQLMetrics(registry)
        routes = {name: BackendRoute(first[name], config.upstreams[first[name]], b.path)
                  for name, b in gql.backends.items()}
        client = BackendClient(session, urls, timeout_s=timeout, metrics=metrics, pools=pools, routes=routes)
        clients = {cell_names[0]: client}
        for cell in cell_names[1:]:
            ups = upstreams_in(cell)
            clients[cell] = replace(
                client, urls={n: config.upstreams[ups[n]].primary_url + b.path for n, b in gql.backends.items()},
                routes={n: BackendRoute(ups[n], config.upstreams[ups[n]], b.path) for n, b in gql.backends.items()})
        executors = {cell: Executor(c) for cell, c in clients.items()}
        shadower = None
        if shadower_args is not None:
            # Its own executors: same connections, the shadow path's timeout (shadow.timeout_s), fetches
            # counted under path="shadow". A slow shadow backend costs bounded memory for bounded time.
            shadows = {cell: Executor(c.for_shadows(config.shadow.timeout_s)) for cell, c in clients.items()}
            shadower = FieldShadower(executor=shadows[cell_names[0]], graphql_path=gql.path,
                                     batch_window_s=gql.shadow_batch_window_s, batch_size=gql.shadow_batch_size,
                                     metrics=metrics,
                                     cell_executors={c: e for c, e in shadows.items() if c is not None},
                                     **dict(shadower_args))
        return cls(composed, Ownership.build(gql, overrides), executors[cell_names[0]], shadower=shadower,
                   compiled_shapes=compiled_shapes, metrics=metrics, cors_origins=tuple(gql.cors_origins),
                   config=config, cell_executors={c: e for c, e in executors.items() if c is not None})

    # ------------------------------------------------------------ the table
    def set_ownership(self, ownership: Ownership) -> None:
        """Swap the field table whole (after a flip or a reload); refuses what cannot be served."""
        ownership.check(self.composed)
        self.ownership = ownership
        self._plans.clear()
        if self.shadower is not None:
            self.shadower.reset()

    # ------------------------------------------------------------ requests
    def parse(self, query: str) -> _Parsed:
        got: _Parsed | None = self._documents.get_or(query)
        if got is None:
            try:
                doc = graphql.parse(query)
            except GraphQLError as exc:
                got = _Parsed(None, [coded(exc, PARSE_FAILED)])
            else:
                errs = graphql.validate(self.composed.schema, doc)
                got = _Parsed(None if errs else doc, [coded(e, VALIDATION_FAILED) for e in errs])
            self._documents.put(query, got)
        return got

    def plan(self, query: str, document: DocumentNode, operation_name: str | None,
             variables: Mapping[str, Any], headers: Mapping[str, str],
             cell: str | None = None) -> tuple[graphql.OperationDefinitionNode, Plan]:
        prep, plan = self._prepare(query, document, operation_name, variables, headers,
                                   self.ownership.for_cell(cell))
        return prep.op, plan

    def _prepare(self, query: str, document: DocumentNode, operation_name: str | None,
                 variables: Mapping[str, Any], headers: Mapping[str, str],
                 ownership: Ownership) -> tuple[_Prepared, Plan]:
        key = (query, operation_name, ownership.version)
        prep: _Prepared | None = self._plans.get_or(key)
        if prep is None:
            try:
                op = operation_of(document, operation_name)
            except GraphQLGatewayError as exc:
                raise Refused(400, OPERATION_RESOLUTION_FAILURE, str(exc)) from exc
            prep = _Prepared(op, root_canary_fields(self.composed, ownership, op),
                             Projector(self.composed.schema, document, op))
            self._plans.put(key, prep)
        choices = tuple(in_canary(r, _root_partition(r, variables, headers)) for r in prep.canary_roots)
        plan = prep.plans.get(choices)
        if plan is None:
            plan = plan_operation(self.composed, ownership, document, operation_name,
                                  dict(zip((r.name for r in prep.canary_roots), choices, strict=True)))
            prep.plans[choices] = plan
        return prep, plan

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None,
                      operation_name: str | None = None, headers: Mapping[str, str] | None = None,
                      *, allow_mutation: bool = True, disclose: bool = False,
                      cell: str | None = None) -> tuple[int, JSON]:
        """Answer one operation: (HTTP status, response body).

        ``cell``: the cell the request belongs to (:meth:`place`): every fetch goes to that cell's
        backends, each field in that cell's mode. None: no cells (with cells: the first cell's
        backends and the global modes).

        ``disclose``: the client may learn which backend served what (``extensions.strangler.servedBy``,
        ``serviceName`` on backend errors); decided by the caller (strangler_proxy/disclosure.py).
        An unexpected failure is a 500 with one INTERNAL_SERVER_ERROR naming an error id, whose
        detail goes only to the log line carrying the same id."""
        try:
            return await self._execute(query, variables or {}, operation_name,
                                       headers if headers is not None else {}, allow_mutation, disclose, cell)
        except Refused as exc:
            return exc.status, exc.body()
        except Exception as exc:  # noqa: BLE001 - the client gets a GraphQL answer, the log the detail
            error_id = secrets.token_hex(ERROR_ID_BYTES)
            log.error("GraphQL request failed (error id %s): %s", error_id, exc, exc_info=exc)
            return 500, {"errors": [error(f"internal error (error id {error_id})", INTERNAL_SERVER_ERROR)]}

    async def _execute(self, query: str, variables: Mapping[str, Any], operation_name: str | None,
                       headers: Mapping[str, str], allow_mutation: bool, disclose: bool,
                       cell: str | None) -> tuple[int, JSON]:
        parsed = self.parse(query)
        if parsed.document is None:
            return 400, {"errors": parsed.errors}
        ownership, executor = self.ownership, self.executor
        if cell is not None:
            ownership = ownership.for_cell(cell)
            got = self.cell_executors.get(cell)
            if got is None:  # a cell a reload added: the gateway reads its backends when it starts
                raise Refused(503, CELL_NOT_SERVED, f"cell {cell!r} was added after the GraphQL gateway started; "
                                                    "its GraphQL requests are answered after a restart")
            executor = got
        try:
            prep, plan = self._prepare(query, parsed.document, operation_name, variables, headers, ownership)
        except GraphQLGatewayError as exc:  # a plan the composed schema cannot serve: the gateway's fault
            return 400, {"errors": [error(str(exc), INTERNAL_SERVER_ERROR)]}
        op = prep.op
        if op.operation == OperationType.MUTATION and not allow_mutation:
            return 405, {"errors": [error("mutations must be sent with POST", BAD_REQUEST)]}
        coerced: Mapping[str, Any] = {}
        if op.variable_definitions:  # nothing to coerce (extra variables are ignored, as graphql-core does)
            values = graphql.get_variable_values(self.composed.schema, op.variable_definitions, dict(variables))
            if isinstance(values, list):
                return 400, {"errors": [coded(e, BAD_USER_INPUT) for e in values]}
            coerced = values.coerced
        # Fields a target serves are recorded (SERVED, or CANDIDATE_ERROR when it failed), as the
        # proxy does for REST routes: guardrails then watch an extracted field with no shadow too.
        # The same trace says who served what, for a client allowed to know.
        record = self.shadower is not None and ownership.targets_serve
        trace = FetchTrace() if record or disclose else None
        start = time.perf_counter()
        data, errors = await executor.run(plan, variables, headers, trace)
        elapsed = time.perf_counter() - start
        # The compiled shape answers clean results; errors and null propagation need graphql-core.
        body = None if errors or not self.compiled_shapes else prep.projector.project(data, coerced)
        if body is None:
            body = shape(self.composed.schema, parsed.document, operation_name, variables, data, errors)
            self.metrics.inc(self.metrics.shaped, SHAPED_GRAPHQL_CORE)
            if "errors" in body:
                finish(body["errors"], disclose=disclose)
        else:
            self.metrics.inc(self.metrics.shaped, SHAPED_COMPILED)
        if disclose and trace is not None:
            body["extensions"] = {"strangler": {"servedBy": trace.served_by()}}
        # The bookkeeping and the shadows run once this task yields: after the answer is on its way.
        shadower = self.shadower
        if shadower is not None and (plan.shadows or record):
            loop = asyncio.get_running_loop()
            if record and trace is not None and trace.ran:
                loop.call_soon(shadower.served, ownership, trace, elapsed, cell)
            if plan.shadows:
                loop.call_soon(shadower.launch, self.composed, ownership, plan.shadows, parsed.document,
                               operation_name, data, variables, headers, elapsed, cell)
        return 200, body

    async def handle(self, request: web.Request, *, disclose: bool | None = None) -> web.Response:
        """aiohttp handler: GET (queries) and POST (JSON or application/graphql); OPTIONS answers
        a browser's CORS preflight (allowed origins only: ``graphql.cors_origins``). With cells in
        the config the gateway was created with, each request is served by its key's cell.

        ``disclose``: whether the client may learn which backend served what, as the proxy decided
        it; None (mounted on its own): decided here from the config the gateway was created with."""
        response, _ = await self.respond(request, disclose=disclose, cells=self.cells)
        return response

    async def respond(self, request: web.Request, *, disclose: bool | None = None,
                      cells: CellTable | None = None) -> tuple[web.Response, str | None]:
        """:meth:`handle`'s answer, and the cell that served it (None: no ``cells``, or the request
        was answered before a cell was chosen). ``cells``: the running config's (the proxy's)."""
        cors = self._cors(request) if self.cors_origins else None
        cell = None
        if request.method not in ("GET", "POST"):
            if request.method == "OPTIONS":
                return web.Response(status=204, headers={**_ALLOW, **(cors or {})}), None
            response = _respond(405, {"errors": [error(f"method {request.method} not allowed; use GET or POST",
                                                        BAD_REQUEST)]})
            response.headers.update(_ALLOW)
        else:
            if disclose is None:
                disclose = self.config is not None and may_disclose(self.config, request.headers)
            try:
                query, variables, operation_name = await _read_request(request)
                if cells is not None:
                    cell = self.place(cells, query, variables, operation_name, request.headers,
                                      request.raw_path.partition("?")[2])
            except Refused as exc:
                response = _respond(exc.status, exc.body())
            else:
                status, body = await self.execute(query, variables, operation_name, request.headers,
                                                  allow_mutation=request.method == "POST", disclose=disclose, cell=cell)
                response = _respond(status, body)
        if cors:
            response.headers.update(cors)
        return response, cell

    def place(self, cells: CellTable, query: str, variables: Mapping[str, Any], operation_name: str | None,
              headers: Mapping[str, str], raw_query: str = "") -> str | None:
        """The request's cell: its key's, or ``cells.unkeyed`` for a request without a key. The key
        is ``cells.partition_key``: a header, query parameter or cookie of the HTTP request, or for
        ``arg:NAME`` the argument ``NAME`` of the operation's root fields (variables resolved);
        ``path:NAME`` finds no key here (the GraphQL path has no variables).

        None: the text is no operation (the answer says why; nothing is fetched). Raises
        :class:`Refused` (400) when root fields give different keys -- one request is served by
        one cell -- or when there is no key and ``cells.unkeyed`` is ``refuse``."""
        if cells.kind == "arg":
            parsed = self.parse(query)
            if parsed.document is None:
                return None
            try:
                op = operation_of(parsed.document, operation_name)
            except GraphQLGatewayError:
                return None
            values = root_argument_values(parsed.document, op, cells.key_name, variables)
            if len(values) > 1:
                shown = ", ".join(repr(v) for v in sorted(values)[:MAX_KEYS_SHOWN])
                raise Refused(400, BAD_REQUEST, f"the root fields give different partition keys ({cells.spec}: "
                                                f"{shown}); one request is served by one cell: send one request "
                                                "per key")
            key = cells.key({}, headers, raw_query, args={cells.key_name: values.pop()} if values else None)
        else:
            key = cells.key({}, headers, raw_query)
        cell = cells.assign(key)
        if cell is None:
            raise Refused(400, BAD_REQUEST, f"the request has no partition key ({cells.spec}): every request "
                                            "must name its cell's key")
        return cell

    def _cors(self, request: web.Request) -> dict[str, str] | None:
        """The CORS headers for this request's ``Origin``, or None (no Origin, or not allowed:
        the browser then refuses the answer, as it would the monolith's)."""
        origin = request.headers.get("Origin")
        if origin is None or not ("*" in self.cors_origins or origin in self.cors_origins):
            return None
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS":
            headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", "content-type, authorization")
            headers["Access-Control-Max-Age"] = "600"
        return headers


def _root_partition(rule: FieldRule, variables: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    # A root field has no entity yet: key:NAME and arg:NAME both read the variable NAME.
    if rule.partition_key is None:
        return None
    kind, name = rule.partition_key.split(":", 1)
    if kind == "header":
        return headers.get(name) or headers.get(name.lower())
    v = variables.get(name)
    return None if v is None else str(v)


def _respond(status: int, body: JSON) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers=_JSON_HEADERS)


async def _read_request(request: web.Request) -> tuple[str, JSON, str | None]:
    if request.method == "GET":
        q = request.query
        variables = q.get("variables")
        try:
            parsed_vars = orjson.loads(variables) if variables else {}
        except orjson.JSONDecodeError as exc:
            raise _bad_request("variables is not JSON") from exc
        return _checked(q.get("query"), parsed_vars, q.get("operationName"), q.get("extensions"))
    raw = await request.read()
    if request.content_type == "application/graphql":
        return _checked(raw.decode("utf-8", "replace"), {}, None)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad_request("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise _bad_request("the body must be a JSON object with 'query'")
    return _checked(payload.get("query"), payload.get("variables") or {}, payload.get("operationName"),
                    payload.get("extensions"))


def _asks_persisted_query(extensions: Any) -> bool:
    if isinstance(extensions, str):  # GET: a JSON text in the query string
        try:
            extensions = orjson.loads(extensions)
        except orjson.JSONDecodeError:
            return False
    return isinstance(extensions, dict) and "persistedQuery" in extensions


def _bad_request(message: str) -> Refused:
    return Refused(400, BAD_REQUEST, message)


def _checked(query: Any, variables: Any, operation_name: Any, extensions: Any = None) -> tuple[str, JSON, str | None]:
    if not isinstance(query, str) or not query.strip():
        if _asks_persisted_query(extensions):
            # An automatic-persisted-query client sent only the hash: this code tells it to send the
            # whole query from now on (none are stored here).
            raise Refused(400, PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported")
        raise _bad_request("must provide a query string")
    if not isinstance(variables, dict):
        raise _bad_request("variables must be a JSON object")
    if operation_name is not None and not isinstance(operation_name, str):
        raise _bad_request("operationName must be a string")
    return query, variables, operation_name


def graphql_handler(gateway: GraphQLGateway) -> Any:
    """The handler the proxy calls for ``config.graphql.path`` (an aiohttp handler)."""
    return gateway.handle
