"""Benchmark: strangler's GraphQL gateway vs Apollo Gateway over the same backends.

    .venv/bin/python bench/graphql_bench.py [--seconds 4] [--skip-apollo]

Starts, each in its own process: the demo backends (monolith + ratings, seeded
SQLite under a temp dir), strangler's gateway (Title.rating extracted to
ratings), the same gateway with Title.rating reverse-shadowed to the monolith,
and Apollo Gateway 2.14 (``bench/apollo``, ``npm ci`` there first). Drives each
with the same two-backend query at concurrency 1 and 16 and prints a table.
The machine is shared; treat the figures as indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
APOLLO_DIR = ROOT / "bench" / "apollo"
QUERY = '{ title(id: "tt0000002") { id primaryTitle startYear rating { averageRating numVotes } } }'
READY_TIMEOUT_S = 60.0
WARMUP_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ child processes
async def serve_backends(directory: str, ports_file: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "graphql"))
    from gql_demo import build_databases, copy_databases, running_demo  # the test suite's demo stack

    tpl = Path(directory) / "template"
    tpl.mkdir(parents=True, exist_ok=True)
    await build_databases(tpl)
    work = Path(directory) / "work"
    work.mkdir(exist_ok=True)
    async with running_demo(copy_databases(tpl, work)) as demo:
        Path(ports_file).write_text(json.dumps(demo.ports))
        await asyncio.Event().wait()


async def serve_gateway(ports: dict[str, int], port: int, shadow: bool) -> None:
    from aiohttp import web

    from strangler_proxy.comparator import DiffComparator
    from strangler_proxy.config import load_config_text
    from strangler_proxy.graphql import GraphQLGateway

    mode = "{target: ratings, mode: extracted, reverse_shadow: true}" if shadow else "{target: ratings, mode: extracted}"
    cfg = load_config_text(f"""
proxy: {{default_upstream: monolith}}
upstreams:
  monolith: {{url: "http://127.0.0.1:{ports['monolith']}"}}
  ratings: {{url: "http://127.0.0.1:{ports['ratings']}"}}
graphql:
  enabled: true
  legacy_backend: monolith
  backends: {{monolith: {{upstream: monolith}}, ratings: {{upstream: ratings}}}}
  fields:
    Title.rating: {mode}
""")
    published: list[int] = [0]

    def publish(_r: Any) -> None:
        published[0] += 1

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60))
    gw = await GraphQLGateway.create(cfg, session, shadower_args={
        "comparator": DiffComparator(), "publish": publish,
        "rules_for": lambda name: cfg.compare_for(cfg.graphql.fields[name])})
    app = web.Application()
    app.router.add_route("*", "/graphql", gw.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# ------------------------------------------------------------ load
async def load(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    body = json.dumps({"query": QUERY}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                async with s.post(url, data=body, headers=headers) as r:
                    payload = await r.read()
                    if r.status != 200 or b'"errors"' in payload:
                        errors += 1
                if record:
                    latencies.append(time.perf_counter() - t0)

        end = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(worker(end, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "n": len(latencies), "errors": errors}


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.post(url, json={"query": QUERY}) as r:
                    text = await r.text()
                    if r.status == 200 and "rating" in text and '"errors"' not in text:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready in {READY_TIMEOUT_S}s")
            await asyncio.sleep(0.3)


def spawn(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def main(seconds: float, skip_apollo: bool) -> None:
    tmp = tempfile.mkdtemp(prefix="gqlbench-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports_file = Path(tmp) / "ports.json"
        procs.append(spawn([sys.executable, __file__, "serve-backends", tmp, str(ports_file)]))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ports_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("backends did not start: " + (procs[0].stderr.read().decode() if procs[0].stderr else ""))
            await asyncio.sleep(0.2)
        ports = json.loads(ports_file.read_text())
        targets: dict[str, str] = {}
        for name, shadow in (("strangler", False), ("strangler+shadow", True)):
            p = free_port()
            procs.append(spawn([sys.executable, __file__, "serve-gateway", json.dumps(ports), str(p),
                                "1" if shadow else "0"]))
            targets[name] = f"http://127.0.0.1:{p}/graphql"
        if not skip_apollo:
            if not (APOLLO_DIR / "node_modules").exists():
                raise RuntimeError("run `npm ci` in bench/apollo first (or pass --skip-apollo)")
            p = free_port()
            subs = [{"name": "monolith", "url": f"http://127.0.0.1:{ports['monolith']}/graphql"},
                    {"name": "ratings", "url": f"http://127.0.0.1:{ports['ratings']}/graphql"}]
            procs.append(spawn(["node", "gateway.mjs"], env={"PORT": str(p), "SUBGRAPHS": json.dumps(subs)},
                               cwd=APOLLO_DIR))
            targets["apollo-gateway"] = f"http://127.0.0.1:{p}/"
        for url in targets.values():
            await wait_ready(url)
        rows = []
        for name, url in targets.items():
            for c in (1, 16):
                r = await load(url, c, seconds)
                rows.append((name, c, r))
                print(f"  {name:18} c={c:<3} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                      f"p99 {r['p99_ms']:6.2f} ms  n={r['n']} errors={r['errors']}", flush=True)
        print_summary(rows)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def print_summary(rows: list[tuple[str, int, dict[str, float]]]) -> None:
    by = {(n, c): r for n, c, r in rows}
    print("\n| gateway | c | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for n, c, r in rows:
        print(f"| {n} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    ours, apollo = ("strangler", 16), ("apollo-gateway", 16)
    if ours in by and apollo in by:
        print(f"\nthroughput c=16: {by[ours]['rps'] / by[apollo]['rps']:.2f}x Apollo (target >= 1.5x)")
        print(f"p50 c=1: {by[('strangler', 1)]['p50_ms'] / by[('apollo-gateway', 1)]['p50_ms']:.2f}x Apollo "
              "(target <= 0.7x)")
    if ("strangler+shadow", 16) in by:
        base, sh = by[("strangler", 16)]["p99_ms"], by[("strangler+shadow", 16)]["p99_ms"]
        print(f"shadowing Title.rating: p99 c=16 {sh:.2f} vs {base:.2f} ms ({(sh / base - 1) * 100:+.0f} %, target <= +10 %)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-backends":
        asyncio.run(serve_backends(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "serve-gateway":
        import uvloop

        uvloop.install()
        asyncio.run(serve_gateway(json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"))
    else:
        ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        ap.add_argument("--seconds", type=float, default=4.0)
        ap.add_argument("--skip-apollo", action="store_true")
        a = ap.parse_args()
        asyncio.run(main(a.seconds, a.skip_apollo))
