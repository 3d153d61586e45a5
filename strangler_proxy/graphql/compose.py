"""Composition: one API schema out of the backends' federation SDL.

Each backend is a federation subgraph; its SDL comes from ``{ _service { sdl } }``
or from a file (``graphql.backends.NAME.sdl_file``). :func:`compose` merges the
types and fields of all of them and records, for every ``Type.field``, which
backends can resolve it, and for every entity type the ``@key`` field sets each
backend accepts in ``_entities``. Federation plumbing (``_entities``,
``_service``, ``_Any``, ``@key``...) stays out of the API schema.

Two backends *conflict* when they define the same name differently (a field
with other argument or return types, an enum with other values, an object in
one and an enum in the other); :class:`~strangler_proxy.errors.GraphQLGatewayError`
then names both backends and the field, and the gateway refuses to start.

    >>> c = compose({"a": 'type Query { hello: String }', "b": 'type Query { bye: Int }'}, legacy="a")
    >>> sorted(c.resolvers["Query.bye"])
    ['b']
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import graphql
from graphql import (
    DocumentNode,
    EnumTypeDefinitionNode,
    EnumTypeExtensionNode,
    FieldDefinitionNode,
    GraphQLSchema,
    InputObjectTypeDefinitionNode,
    InputObjectTypeExtensionNode,
    InterfaceTypeDefinitionNode,
    InterfaceTypeExtensionNode,
    ListTypeNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    ScalarTypeDefinitionNode,
    ScalarTypeExtensionNode,
    TypeNode,
    UnionTypeDefinitionNode,
    UnionTypeExtensionNode,
    print_ast,
)

from strangler_proxy.errors import BackendSDLUnavailable, GraphQLGatewayError

SDL_QUERY = "{ _service { sdl } }"
DEFAULT_SDL_TIMEOUT_S = 10.0
log = logging.getLogger("strangler.graphql.compose")
SDL_RETRY_FIRST_PAUSE_S = 0.2
SDL_RETRY_MAX_PAUSE_S = 2.0
# Names that belong to the federation machinery, never to the API schema.
FEDERATION_TYPES = frozenset(
    {"_Any", "_Entity", "_Service", "_FieldSet", "FieldSet", "link__Import", "link__Purpose",
     "federation__FieldSet", "federation__Scope", "federation__Policy", "federation__ContextFieldValue"}
)
FEDERATION_ROOT_FIELDS = frozenset({"_entities", "_service"})
# Applied directives the API schema keeps; every other one is subgraph metadata.
KEPT_DIRECTIVES = frozenset({"deprecated", "specifiedBy"})
ROOT_TYPES = ("Query", "Mutation", "Subscription")

_OBJECTISH = (ObjectTypeDefinitionNode, ObjectTypeExtensionNode, InterfaceTypeDefinitionNode, InterfaceTypeExtensionNode)
_KIND = {
    ObjectTypeDefinitionNode: "object", ObjectTypeExtensionNode: "object",
    InterfaceTypeDefinitionNode: "interface", InterfaceTypeExtensionNode: "interface",
    EnumTypeDefinitionNode: "enum", EnumTypeExtensionNode: "enum",
    InputObjectTypeDefinitionNode: "input", InputObjectTypeExtensionNode: "input",
    UnionTypeDefinitionNode: "union", UnionTypeExtensionNode: "union",
    ScalarTypeDefinitionNode: "scalar", ScalarTypeExtensionNode: "scalar",
}


@dataclass(frozen=True, slots=True)
class EntityKey:
    """One ``@key`` of one type in one backend: its field set, parsed."""

    fields: str  # as written: "id" or "id sku" or "org { id }"
    selection: graphql.SelectionSetNode


@dataclass(frozen=True)
class ComposedSchema:
    """The API schema and who can resolve what. Immutable; rebuilt whole."""

    schema: GraphQLSchema
    sdl: str
    legacy: str
    backends: tuple[str, ...]
    resolvers: Mapping[str, frozenset[str]]  # "Type.field" -> backends resolving it
    keys: Mapping[str, Mapping[str, EntityKey]]  # type -> backend -> first resolvable key

    def can_resolve(self, backend: str, type_name: str, field_name: str) -> bool:
        return backend in self.resolvers.get(f"{type_name}.{field_name}", ())

    def is_entity(self, type_name: str) -> bool:
        return bool(self.keys.get(type_name))

    def key(self, type_name: str, backend: str) -> EntityKey | None:
        return self.keys.get(type_name, {}).get(backend)


@dataclass
class _TypeAcc:
    """What the subgraphs said about one type name, while merging."""

    kind: str
    first: str  # backend that defined it first
    description: graphql.StringValueNode | None = None
    fields: dict[str, tuple[FieldDefinitionNode, str]] = field(default_factory=dict)
    interfaces: dict[str, NamedTypeNode] = field(default_factory=dict)
    values: dict[str, frozenset[str]] = field(default_factory=dict)  # enum: backend -> its values
    members: dict[str, NamedTypeNode] = field(default_factory=dict)
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # input signature per backend


def _directive_arg(d: graphql.DirectiveNode, name: str) -> graphql.ValueNode | None:
    return next((a.value for a in d.arguments or () if a.name.value == name), None)


def _parse_key(fields: str, where: str) -> graphql.SelectionSetNode:
    try:
        doc = graphql.parse("{" + fields + "}", no_location=True)
    except graphql.GraphQLError as exc:
        raise GraphQLGatewayError(f"{where}: @key(fields: {fields!r}) is not a field set: {exc.message}") from exc
    op = doc.definitions[0]
    assert isinstance(op, graphql.OperationDefinitionNode)
    return op.selection_set


def _named(t: TypeNode) -> str:
    while not isinstance(t, NamedTypeNode):
        t = t.type  # type: ignore[attr-defined]
    return t.name.value


def _shape(t: TypeNode) -> str:
    """The type without non-null marks: backends may disagree on nullability."""
    if isinstance(t, NonNullTypeNode):
        return _shape(t.type)
    if isinstance(t, ListTypeNode):
        return "[" + _shape(t.type) + "]"
    return t.name.value  # type: ignore[attr-defined]


def _weaker(a: TypeNode, b: TypeNode) -> TypeNode:
    """Of two output types of the same shape, the more nullable at each level."""
    if isinstance(a, NonNullTypeNode) and not isinstance(b, NonNullTypeNode):
        return _weaker(a.type, b)
    if isinstance(b, NonNullTypeNode) and not isinstance(a, NonNullTypeNode):
        return _weaker(a, b.type)
    if isinstance(a, NonNullTypeNode) and isinstance(b, NonNullTypeNode):
        return NonNullTypeNode(type=_weaker(a.type, b.type))  # type: ignore[arg-type]
    if isinstance(a, ListTypeNode) and isinstance(b, ListTypeNode):
        return ListTypeNode(type=_weaker(a.type, b.type))
    return a


def _args_signature(f: FieldDefinitionNode) -> str:
    return ", ".join(sorted(print_ast(a) for a in f.arguments or ()))


def _clean_field(f: FieldDefinitionNode) -> FieldDefinitionNode:
    kept = tuple(d for d in f.directives or () if d.name.value in KEPT_DIRECTIVES)
    return replace(f, directives=kept)


def _conflict(type_name: str, what: str, a: str, b: str, detail: str) -> GraphQLGatewayError:
    return GraphQLGatewayError(
        f"schema conflict on {type_name}{'.' + what if what else ''}: backend {a!r} and backend {b!r} "
        f"disagree ({detail}); make the definitions identical in both SDLs before starting the gateway"
    )


def parse_sdl(backend: str, sdl: str) -> DocumentNode:
    try:
        return graphql.parse(sdl, no_location=True)
    except graphql.GraphQLError as exc:
        raise GraphQLGatewayError(f"backend {backend!r}: its SDL does not parse: {exc.message}") from exc


def compose(sdls: Mapping[str, str], *, legacy: str) -> ComposedSchema:
    """Merge the backends' SDL (name -> text) into one :class:`ComposedSchema`."""
    if legacy not in sdls:
        raise GraphQLGatewayError(f"the legacy backend {legacy!r} has no SDL (backends: {sorted(sdls)})")
    types: dict[str, _TypeAcc] = {}
    resolvers: dict[str, set[str]] = {}
    keys: dict[str, dict[str, EntityKey]] = {}
    entity_union: dict[str, set[str]] = {}  # backend -> members of its _Entity union
    # Legacy first: where backends agree, its descriptions and field order win.
    for backend in sorted(sdls, key=lambda b: (b != legacy, b)):
        doc = parse_sdl(backend, sdls[backend])
        for node in doc.definitions:
            kind = _KIND.get(type(node))
            if kind is None:
                continue  # schema definitions/extensions and directive definitions: subgraph metadata
            name = node.name.value  # type: ignore[attr-defined]
            if name == "_Entity" and isinstance(node, (UnionTypeDefinitionNode, UnionTypeExtensionNode)):
                entity_union.setdefault(backend, set()).update(t.name.value for t in node.types or ())
            if name in FEDERATION_TYPES or name.startswith("__"):
                continue
            acc = types.get(name)
            if acc is None:
                acc = types[name] = _TypeAcc(kind=kind, first=backend, description=getattr(node, "description", None))
            elif acc.kind != kind:
                raise _conflict(name, "", acc.first, backend, f"{acc.kind} in one, {kind} in the other")
            _merge_node(acc, node, name, backend, resolvers, keys)
    # Subgraphs that list entities in _Entity without @key (hand-written SDL): key "id".
    for backend, members in entity_union.items():
        for t in members:
            if backend not in keys.get(t, {}) and backend in resolvers.get(f"{t}.id", set()):
                keys.setdefault(t, {})[backend] = EntityKey("id", _parse_key("id", t))
    for name, acc in types.items():
        if acc.kind == "enum":
            (b0, v0), *rest = acc.values.items()
            for b, v in rest:
                if v != v0:
                    raise _conflict(name, "", b0, b, f"enum values {sorted(v0)} vs {sorted(v)}")
    if "Query" not in types:
        raise GraphQLGatewayError("no backend defines a Query type")
    doc = DocumentNode(definitions=tuple(_definition(n, acc) for n, acc in types.items()))
    try:
        schema = graphql.build_ast_schema(doc, assume_valid_sdl=False)
    except (graphql.GraphQLError, TypeError) as exc:
        raise GraphQLGatewayError(f"the composed schema is invalid: {exc}") from exc
    problems = graphql.validate_schema(schema)
    if problems:
        raise GraphQLGatewayError("the composed schema is invalid: " + "; ".join(p.message for p in problems))
    return ComposedSchema(
        schema=schema,
        sdl=graphql.print_schema(schema),
        legacy=legacy,
        backends=tuple(sorted(sdls)),
        resolvers={k: frozenset(v) for k, v in resolvers.items()},
        keys={t: dict(v) for t, v in keys.items()},
    )


def _merge_node(
    acc: _TypeAcc,
    node: graphql.TypeDefinitionNode | graphql.TypeExtensionNode,
    name: str,
    backend: str,
    resolvers: dict[str, set[str]],
    keys: dict[str, dict[str, EntityKey]],
) -> None:
    if isinstance(node, _OBJECTISH):
        for d in node.directives or ():
            if d.name.value == "key":
                fields_v = _directive_arg(d, "fields")
                resolvable = _directive_arg(d, "resolvable")
                if not isinstance(fields_v, graphql.StringValueNode):
                    raise GraphQLGatewayError(f"backend {backend!r}: {name} has a @key without fields")
                if isinstance(resolvable, graphql.BooleanValueNode) and not resolvable.value:
                    continue
                keys.setdefault(name, {}).setdefault(
                    backend, EntityKey(fields_v.value, _parse_key(fields_v.value, f"{backend}: {name}"))
                )
        for i in node.interfaces or ():
            acc.interfaces.setdefault(i.name.value, i)
        for f in node.fields or ():
            fname = f.name.value
            if name in ROOT_TYPES and fname in FEDERATION_ROOT_FIELDS:
                continue
            external = any(d.name.value == "external" for d in f.directives or ())
            seen = acc.fields.get(fname)
            if seen is None:
                acc.fields[fname] = (_clean_field(f), backend)
            else:
                prev, prev_backend = seen
                if _shape(prev.type) != _shape(f.type):
                    raise _conflict(name, fname, prev_backend, backend,
                                    f"type {print_ast(prev.type)} vs {print_ast(f.type)}")
                if _args_signature(prev) != _args_signature(f):
                    raise _conflict(name, fname, prev_backend, backend,
                                    f"arguments ({_args_signature(prev)}) vs ({_args_signature(f)})")
                if print_ast(prev.type) != print_ast(f.type):
                    acc.fields[fname] = (replace(prev, type=_weaker(prev.type, f.type)), prev_backend)
            if not external:
                resolvers.setdefault(f"{name}.{fname}", set()).add(backend)
    elif isinstance(node, (EnumTypeDefinitionNode, EnumTypeExtensionNode)):
        # Compared once all of a backend's extensions are in (see _check_enums).
        acc.values[backend] = acc.values.get(backend, frozenset()) | {v.name.value for v in node.values or ()}
    elif isinstance(node, (InputObjectTypeDefinitionNode, InputObjectTypeExtensionNode)):
        sig = ", ".join(sorted(print_ast(_clean_input(v)) for v in node.fields or ()))
        for b, (other_sig, _) in acc.inputs.items():
            if b != backend and other_sig != sig:
                raise _conflict(name, "", b, backend, f"input fields ({other_sig}) vs ({sig})")
        acc.inputs[backend] = (sig, backend)
        for v in node.fields or ():
            acc.fields.setdefault(v.name.value, (v, backend))  # type: ignore[arg-type]
    elif isinstance(node, (UnionTypeDefinitionNode, UnionTypeExtensionNode)):
        for t in node.types or ():
            acc.members.setdefault(t.name.value, t)


def _clean_input(v: graphql.InputValueDefinitionNode) -> graphql.InputValueDefinitionNode:
    return replace(v, directives=(), description=None)


def _definition(name: str, acc: _TypeAcc) -> graphql.TypeDefinitionNode:
    n = NameNode(value=name)
    if acc.kind in ("object", "interface"):
        cls = ObjectTypeDefinitionNode if acc.kind == "object" else InterfaceTypeDefinitionNode
        return cls(  # type: ignore[return-value]
            name=n, description=acc.description, directives=(),
            interfaces=tuple(acc.interfaces.values()), fields=tuple(f for f, _ in acc.fields.values()),
        )
    if acc.kind == "enum":
        values = sorted(next(iter(acc.values.values())))
        return EnumTypeDefinitionNode(
            name=n, description=acc.description, directives=(),
            values=tuple(graphql.EnumValueDefinitionNode(name=NameNode(value=v), directives=()) for v in values),
        )
    if acc.kind == "input":
        return InputObjectTypeDefinitionNode(
            name=n, description=acc.description, directives=(),
            fields=tuple(_clean_input(f) for f, _ in acc.fields.values()),  # type: ignore[arg-type]
        )
    if acc.kind == "union":
        return UnionTypeDefinitionNode(name=n, description=acc.description, directives=(),
                                       types=tuple(acc.members.values()))
    return ScalarTypeDefinitionNode(name=n, description=acc.description, directives=())


async def fetch_sdl(session: aiohttp.ClientSession, backend: str, url: str,
                    timeout_s: float = DEFAULT_SDL_TIMEOUT_S, headers: Mapping[str, str] | None = None) -> str:
    """Ask one subgraph for its SDL with ``{ _service { sdl } }`` (``headers``: its upstream's ``headers.set``)."""
    try:
        async with session.post(url, json={"query": SDL_QUERY}, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise BackendSDLUnavailable(
            f"backend {backend!r}: cannot fetch its SDL from {url} ({str(exc) or type(exc).__name__}); "
            f"start it, or give graphql.backends.{backend}.sdl_file"
        ) from exc
    sdl = ((body or {}).get("data") or {}).get("_service", {}) or {}
    if not isinstance(sdl, dict) or not isinstance(sdl.get("sdl"), str):
        raise BackendSDLUnavailable(f"backend {backend!r}: {url} answered no _service.sdl: {str(body)[:300]}")
    return str(sdl["sdl"])


async def load_sdls(
    session: aiohttp.ClientSession, backends: Mapping[str, tuple[str, str | None]], wait_s: float = 0.0,
    headers: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """name -> (url, sdl_file or None) into name -> SDL text, fetched in parallel
    (``headers``: name -> what to send it, e.g. the credentials its upstream's header rules set).

    A backend that cannot be asked yet (still starting, as when a whole stack starts at
    once) is asked again, with growing pauses, for up to ``wait_s`` seconds; then the
    gateway refuses to start, naming it and the way out (start it, or an ``sdl_file``)."""
    loop = asyncio.get_running_loop()

    async def one(name: str, url: str, sdl_file: str | None) -> str:
        if sdl_file:
            try:
                return Path(sdl_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise GraphQLGatewayError(f"backend {name!r}: cannot read sdl_file {sdl_file}: {exc.strerror}") from exc
        deadline = loop.time() + wait_s
        pause = SDL_RETRY_FIRST_PAUSE_S
        while True:
            try:
                return await fetch_sdl(session, name, url, headers=(headers or {}).get(name))
            except BackendSDLUnavailable as exc:
                left = deadline - loop.time()
                if left <= 0:
                    if wait_s > 0:
                        raise BackendSDLUnavailable(f"{exc} (waited {wait_s:g}s)") from exc
                    raise
                if pause == SDL_RETRY_FIRST_PAUSE_S:
                    log.warning("asking again for up to %gs: %s", wait_s, exc)
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, SDL_RETRY_MAX_PAUSE_S)

    names = list(backends)
    texts = await asyncio.gather(*(one(n, *backends[n]) for n in names))
    return dict(zip(names, texts, strict=True))
