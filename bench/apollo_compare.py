"""Same queries, two gateways: strangler's and Apollo Gateway, over the same four backends.

    .venv/bin/python bench/apollo_compare.py [--verbose]      (npm ci in bench/apollo first)

Starts the demo monolith and the three services (seeded, backfilled SQLite under
a temp dir), Apollo Gateway 2.14 (``bench/apollo/gateway.mjs``: every field a
service can take over is the service's) and the whole strangler proxy
(``ProxyServer``) twice: every field on legacy, and every field extracted. Sends
each operation of the test corpus (``tests/graphql/gql_corpus.py``) and the
extra operations below to all three over HTTP and compares the answers:
``data`` exactly (order-insensitive only for ``images``, which the monolith
shuffles on purpose, and for the order of a type's fields in introspection),
and errors by where they are (their paths; the messages
are each gateway's own words). Prints one line per operation and a summary;
exits 1 if any answer differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "graphql"))
sys.path.insert(0, str(ROOT / "bench"))

from gql_corpus import CORPUS, normalise  # noqa: E402  (the test suite's corpus)
from gql_demo import SERVICE_FIELDS, build_databases, copy_databases, running_demo  # noqa: E402
from graphql_bench import APOLLO_DIR, free_port, spawn, wait_port  # noqa: E402

# Beyond the corpus: shapes a client sends that the corpus does not spell this way.
EXTRA: list[tuple[str, str, dict[str, Any]]] = [
    ("x-rating-and-cast-one-title", '{ title(id: "tt0000005") { primaryTitle rating { numVotes averageRating } '
                                    'cast { ordering person { name } } } }', {}),
    ("x-typename-everywhere", '{ title(id: "tt0000006") { __typename images { __typename id } rating { __typename } } }', {}),
    ("x-variables-nested", 'query Q($id: ID!, $withCast: Boolean = true) { title(id: $id) { id '
                           'cast @include(if: $withCast) { person { id knownFor { id rating { numVotes } } } } } }',
     {"id": "tt0000008"}),
    ("x-search-then-everything", '{ search(q: "e", limit: 6) { titles { id primaryTitle rating { averageRating } '
                                 'images { id width } cast { category } } } }', {}),
    ("x-person-deep", '{ person(id: "nm0000003") { name knownFor { primaryTitle cast { person { name knownFor { id } } } } } }', {}),
    ("x-aliases-same-entity", '{ a: title(id: "tt0000009") { r1: rating { numVotes } } '
                              'b: title(id: "tt0000009") { r2: rating { averageRating } } }', {}),
    ("x-fragment-on-rating", '{ title(id: "tt0000010") { rating { ...R } } } fragment R on Rating { numVotes averageRating }', {}),
    ("x-unknown-and-known", '{ x: title(id: "tt0999999") { id rating { numVotes } } y: title(id: "tt0000011") { id rating { numVotes } } }', {}),
    ("x-invalid-field", '{ title(id: "tt0000001") { nope } }', {}),
    ("x-syntax-error", '{ title(id: "tt0000001") { id ', {}),
    ("x-missing-variable", 'query($id: ID!) { title(id: $id) { id } }', {}),
]


def _all_fields_yaml(ports: dict[str, int], mode: str) -> str:
    ups = "\n".join(f'  {n}: {{url: "http://127.0.0.1:{p}"}}' for n, p in ports.items())
    backends = "\n".join(f"    {n}: {{upstream: {n}}}" for n in ports)
    fields = "\n".join(f"    {f}: {{target: {s}, mode: {mode}}}" for s, fs in SERVICE_FIELDS.items() for f in fs)
    return f"proxy: {{default_upstream: monolith}}\nupstreams:\n{ups}\ngraphql:\n  enabled: true\n" \
           f"  legacy_backend: monolith\n  backends:\n{backends}\n  fields:\n{fields}\n"


def _fields_unordered(v: Any) -> Any:
    """Introspection lists a type's fields in its schema's order, and a composed schema's order
    is each gateway's own (strangler keeps the monolith's; Apollo's composition puts a field
    shared by several subgraphs first): compare ``fields`` lists as sets of names."""
    if isinstance(v, dict):
        out = {k: _fields_unordered(child) for k, child in v.items()}
        if isinstance(out.get("fields"), list):
            out["fields"] = sorted(out["fields"], key=repr)
        return out
    if isinstance(v, list):
        return [_fields_unordered(x) for x in v]
    return v


def comparable(body: Any) -> Any:
    """``data`` as is (images unordered; introspection's field lists unordered) and the errors'
    paths: what both gateways must agree on."""
    if not isinstance(body, dict):
        return {"not-json-object": body}
    errors = body.get("errors") or []
    return {
        "data": _fields_unordered(normalise(body.get("data"))),
        "has_data": "data" in body,
        "error_paths": sorted(json.dumps(e.get("path")) for e in errors if isinstance(e, dict)),
        "has_errors": bool(errors),
    }


async def ask(s: aiohttp.ClientSession, url: str, query: str, variables: dict[str, Any]) -> Any:
    v = dict(variables)
    op = v.pop("__operationName", None)
    async with s.post(url, json={"query": query, "variables": v, "operationName": op},
                      headers={"Accept": "application/json"}) as r:
        text = await r.text()
        try:
            return json.loads(text)
        except ValueError:
            return {"not-json": text[:200], "status": r.status}


async def main(verbose: bool) -> int:
    if not (APOLLO_DIR / "node_modules").exists():
        print("run `npm ci` in bench/apollo first", file=sys.stderr)
        return 2
    from strangler_proxy.server import ProxyServer

    tmp = Path(tempfile.mkdtemp(prefix="apollo-compare-"))
    apollo = None
    try:
        (tmp / "template").mkdir()
        await build_databases(tmp / "template")
        async with running_demo(copy_databases(tmp / "template", tmp)) as demo:
            port = free_port()
            subs = [{"name": n, "url": f"http://127.0.0.1:{p}/graphql"} for n, p in demo.ports.items()]
            apollo = spawn(["node", "gateway.mjs"], env={"PORT": str(port), "SUBGRAPHS": json.dumps(subs)}, cwd=APOLLO_DIR)
            await wait_port(port, apollo)
            urls = {"apollo": f"http://127.0.0.1:{port}/"}
            async with _proxy(ProxyServer, tmp, demo.ports, "legacy") as legacy, \
                    _proxy(ProxyServer, tmp, demo.ports, "extracted") as extracted:
                urls["strangler (all legacy)"] = legacy
                urls["strangler (all extracted)"] = extracted
                return await _compare(demo.session, urls, verbose)
    finally:
        if apollo is not None:
            apollo.terminate()
            apollo.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


class _proxy:
    """A ProxyServer over the demo with every service field in ``mode``; yields its /graphql URL."""

    def __init__(self, server_cls: Any, tmp: Path, ports: dict[str, int], mode: str) -> None:
        cfg = tmp / f"strangler-{mode}.yaml"
        cfg.write_text(_all_fields_yaml(ports, mode))
        state = f"sqlite+aiosqlite:///{tmp / f'control-{mode}.sqlite3'}"
        self.server = server_cls(cfg, port=0, admin_port=0, host="127.0.0.1", state_url=state, watch=False)

    async def __aenter__(self) -> str:
        await self.server.__aenter__()
        return f"{self.server.url}/graphql"

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)


async def _compare(s: aiohttp.ClientSession, urls: dict[str, str], verbose: bool) -> int:
    ops = [*CORPUS, *EXTRA]
    differ = 0
    reference = "apollo"
    for name, query, variables in ops:
        answers = {g: await ask(s, u, query, variables) for g, u in urls.items()}
        ref = comparable(answers[reference])
        bad = [g for g in urls if g != reference and comparable(answers[g]) != ref]
        differ += bool(bad)
        print(f"  {'DIFFER' if bad else 'same  '} {name}" + (f"  ({', '.join(bad)})" if bad else ""))
        if bad and verbose:
            for g in (reference, *bad):
                print(f"      {g}: {json.dumps(answers[g])[:600]}")
    print(f"\n{len(ops) - differ} of {len(ops)} operations answered alike by Apollo Gateway and strangler "
          f"({', '.join(g for g in urls if g != reference)}); {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--verbose", action="store_true", help="print both answers where they differ")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(asyncio.run(main(ap.parse_args().verbose)))
