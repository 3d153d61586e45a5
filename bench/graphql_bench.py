"""Benchmark: strangler's GraphQL gateway vs Apollo Gateway over the same backends.

    flock /tmp/strangler/bench.lock .venv/bin/python bench/graphql_bench.py [--seconds 4] [--rounds 3]
        [--rate N] [--shadow-rounds N] [--skip-apollo] [--skip-proxy]

(``--rounds 0 --rate N`` runs only the shadow-cost pairs.)

Starts, each in its own process: the demo monolith and the ratings service
(seeded SQLite under a temp dir, one process each), four strangler gateways
differing only in how they own Title.rating -- ``strangler`` (extracted to
ratings), ``strangler+reverse-shadow`` (extracted, the monolith asked too in
the background), ``strangler-legacy`` (the monolith answers everything) and
``strangler+shadow`` (the monolith answers; ratings asked in the background and
compared) -- the whole proxy (``ProxyServer``, what ``strangler proxy`` runs)
with the extracted config, and Apollo Gateway 2.14 (``bench/apollo``, ``npm ci``
there first). Drives each with the same two-backend query, closed loop at
concurrency 1 and 16, in ``--rounds`` interleaved rounds (the machine is
shared: medians and spreads are printed), and records the CPU each process
spent per request (/proc). Then measures the cost of shadowing open loop at a
fixed offered rate below saturation (``--rate``; default half the slowest
shadowing gateway's c=16 throughput), where p99 means something: at
saturation any extra work costs p99 by definition. Two pairs, interleaved per
round: shadow vs legacy (the natural one: issue 6's "shadowing one field") and
reverse-shadow vs extracted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
APOLLO_DIR = ROOT / "bench" / "apollo"
QUERY = '{ title(id: "tt0000002") { id primaryTitle startYear rating { averageRating numVotes } } }'
READY_TIMEOUT_S = 60.0
WARMUP_S = 1.0
OPEN_LOOP_S = 8.0
CONCURRENCIES = (1, 16)
BACKENDS = ("monolith", "ratings")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


# How each strangler gateway target owns Title.rating. The pair legacy/shadow is the natural
# shadow cost (the monolith answers; ratings is asked in the background); extracted/reverse-shadow
# is the cut-over pair (ratings answers; the monolith gets a second query in the background).
FIELD_MODES = {
    "extracted": "{target: ratings, mode: extracted}",
    "reverse-shadow": "{target: ratings, mode: extracted, reverse_shadow: true}",
    "legacy": "{target: ratings, mode: legacy}",
    "shadow": "{target: ratings, mode: shadow}",
}
GATEWAYS = (  # target name -> FIELD_MODES key
    ("strangler", "extracted"),
    ("strangler+reverse-shadow", "reverse-shadow"),
    ("strangler-legacy", "legacy"),
    ("strangler+shadow", "shadow"),
)
SHADOW_PAIRS = (("strangler-legacy", "strangler+shadow"), ("strangler", "strangler+reverse-shadow"))


def graphql_yaml(ports: dict[str, int], mode: str) -> str:
    return f"""
proxy: {{default_upstream: monolith}}
upstreams:
  monolith: {{url: "http://127.0.0.1:{ports['monolith']}"}}
  ratings: {{url: "http://127.0.0.1:{ports['ratings']}"}}
graphql:
  enabled: true
  legacy_backend: monolith
  backends: {{monolith: {{upstream: monolith}}, ratings: {{upstream: ratings}}}}
  fields:
    Title.rating: {FIELD_MODES[mode]}
"""


# ------------------------------------------------------------ child processes
def _freeze() -> None:
    """What `strangler proxy` and `strangler up` do once started: start-up objects out of the GC's scans."""
    from strangler_proxy.server import freeze_startup_objects

    freeze_startup_objects()


async def build(directory: str) -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests" / "graphql"))
    from gql_demo import build_databases, copy_databases  # the test suite's demo stack

    tpl = Path(directory) / "template"
    tpl.mkdir(parents=True, exist_ok=True)
    await build_databases(tpl)
    work = Path(directory) / "work"
    work.mkdir(exist_ok=True)
    return copy_databases(tpl, work)


async def serve_backend(name: str, db_url: str, port: int) -> None:
    from aiohttp import web

    if name == "monolith":
        from legacy_monolith.app import create_app as create_monolith

        app = create_monolith(db_url)
    else:
        from extracted_services.ratings.app import create_app as create_ratings
        from extracted_services.ratings.settings import RatingsSettings, Rounding

        app = create_ratings(RatingsSettings(db_url, Rounding.LEGACY))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    _freeze()
    await asyncio.Event().wait()


async def serve_gateway(ports: dict[str, int], port: int, mode: str) -> None:
    from aiohttp import web

    from strangler_proxy.config import load_config_text
    from strangler_proxy.diff.comparator import DiffComparator
    from strangler_proxy.graphql import GraphQLGateway

    cfg = load_config_text(graphql_yaml(ports, mode))
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
    _freeze()
    await asyncio.Event().wait()


async def serve_proxy(ports: dict[str, int], port: int, directory: str) -> None:
    """The whole proxy, as `strangler proxy` runs it (flips, results store, metrics, access log)."""
    from strangler_proxy.server import ProxyServer

    cfg = Path(directory) / f"strangler-{port}.yaml"
    cfg.write_text(graphql_yaml(ports, "extracted"))
    state = f"sqlite+aiosqlite:///{Path(directory) / f'control-{port}.sqlite3'}"
    async with ProxyServer(cfg, port=port, admin_port=0, host="127.0.0.1", state_url=state, watch=False):
        _freeze()
        await asyncio.Event().wait()


# ------------------------------------------------------------ load
@dataclass
class Target:
    name: str
    url: str
    pid: int


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    n: int
    errors: int
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process -> CPU ms per request
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, for pooled quantiles


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000


async def _post(s: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        payload = await r.read()
        return r.status == 200 and b'"errors"' not in payload


Mark = Any  # called at the start and at the end of the recorded phase (CPU accounting)


async def closed_loop(url: str, concurrency: int, seconds: float, mark: Mark) -> tuple[list[float], int, float]:
    body = json.dumps({"query": QUERY}).encode()
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                ok = await _post(s, url, body)
                if record:
                    latencies.append(time.perf_counter() - t0)
                    errors += not ok

        end = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(worker(end, False) for _ in range(concurrency)))
        mark()
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        mark()
        return latencies, errors, elapsed


async def open_loop(url: str, rate: float, seconds: float, mark: Mark) -> tuple[list[float], int, float]:
    """Requests sent on a fixed schedule whatever the answers do; latency from the scheduled time
    (no coordinated omission)."""
    body = json.dumps({"query": QUERY}).encode()
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        async def one(scheduled: float, record: bool) -> None:
            nonlocal errors
            ok = await _post(s, url, body)
            if record:
                latencies.append(time.perf_counter() - scheduled)
                errors += not ok

        async def phase(length: float, record: bool) -> None:
            tasks = []
            start = time.perf_counter()
            for i in range(int(length * rate)):
                at = start + i / rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(at, record)))
            await asyncio.gather(*tasks)

        await phase(WARMUP_S, False)
        mark()
        start = time.perf_counter()
        await phase(seconds, True)
        elapsed = time.perf_counter() - start
        mark()
        return latencies, errors, elapsed


async def measure(target: Target, backends: dict[str, int], how: str, arg: float, seconds: float) -> Run:
    pids = {"gateway": target.pid, **{f"backend:{n}": pid for n, pid in backends.items()}}
    marks: list[dict[str, float]] = []

    def mark() -> None:
        t = os.times()
        marks.append({"loadgen": t.user + t.system, **{k: cpu_seconds(p) for k, p in pids.items()}})

    # The load generator must not stall: a full collection here (it holds every run's latencies)
    # would delay sends and land as a p99 spike on whichever target is being measured.
    gc.collect()
    gc.disable()
    try:
        if how == "closed":
            latencies, errors, elapsed = await closed_loop(target.url, int(arg), seconds, mark)
        else:
            latencies, errors, elapsed = await open_loop(target.url, arg, seconds, mark)
    finally:
        gc.enable()
    n = len(latencies)
    # Requests still in flight at the marks blur this by a few of n; the open loop's end mark waits for all.
    cpu = {k: (marks[1][k] - marks[0][k]) * 1000 / n for k in marks[0]}
    p50, p99 = _quantiles(latencies)
    return Run(n / elapsed, p50, p99, n, errors, cpu, latencies)


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


async def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"port {port} not listening: " + (proc.stderr.read().decode() if proc.stderr else "")) from None
            await asyncio.sleep(0.2)


def spawn(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


Rows = dict[tuple[str, float], list[Run]]


async def main(a: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="gqlbench-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dbs = await build(tmp)
        ports: dict[str, int] = {}
        backend_pids: dict[str, int] = {}
        for name in BACKENDS:
            ports[name] = free_port()
            procs.append(spawn([sys.executable, __file__, "serve-backend", name, dbs[name], str(ports[name])]))
            backend_pids[name] = procs[-1].pid
            await wait_port(ports[name], procs[-1])
        targets: list[Target] = []
        for name, mode in GATEWAYS:
            p = free_port()
            procs.append(spawn([sys.executable, __file__, "serve-gateway", json.dumps(ports), str(p), mode]))
            targets.append(Target(name, f"http://127.0.0.1:{p}/graphql", procs[-1].pid))
        if not a.skip_proxy:
            p = free_port()
            procs.append(spawn([sys.executable, __file__, "serve-proxy", json.dumps(ports), str(p), tmp]))
            targets.append(Target("strangler-proxy", f"http://127.0.0.1:{p}/graphql", procs[-1].pid))
        if not a.skip_apollo:
            if not (APOLLO_DIR / "node_modules").exists():
                raise RuntimeError("run `npm ci` in bench/apollo first (or pass --skip-apollo)")
            p = free_port()
            subs = [{"name": n, "url": f"http://127.0.0.1:{ports[n]}/graphql"} for n in BACKENDS]
            procs.append(spawn(["node", "gateway.mjs"], env={"PORT": str(p), "SUBGRAPHS": json.dumps(subs)},
                               cwd=APOLLO_DIR))
            targets.append(Target("apollo-gateway", f"http://127.0.0.1:{p}/", procs[-1].pid))
        for t in targets:
            await wait_ready(t.url)
        closed: Rows = {}
        for r in range(a.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]  # interleaved: drift hits all alike
            for t in order:
                for c in CONCURRENCIES:
                    run = await measure(t, backend_pids, "closed", c, a.seconds)
                    closed.setdefault((t.name, c), []).append(run)
                    _line(f"round {r + 1} {t.name}", f"c={c}", run)
        # One rate for both pairs: half the slowest shadowing gateway's saturated throughput.
        rate = a.rate or 0.5 * min(x.rps for _, sh in SHADOW_PAIRS for x in closed[(sh, 16)])
        opened: Rows = {}
        by_name = {t.name: t for t in targets}
        for r in range(a.shadow_rounds or a.rounds):
            for pair in SHADOW_PAIRS:
                for name in pair if r % 2 == 0 else pair[::-1]:  # baseline first on even rounds
                    run = await measure(by_name[name], backend_pids, "open", rate, OPEN_LOOP_S)
                    opened.setdefault((name, rate), []).append(run)
                    _line(f"round {r + 1} {name}", f"{rate:.0f}/s", run)
        print_summary(closed, opened, rate)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _line(label: str, load: str, r: Run) -> None:
    cpu = " ".join(f"{k}={v:.2f}" for k, v in r.cpu_ms.items())
    print(f"  {label:28} {load:7} {r.rps:7.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  "
          f"n={r.n} errors={r.errors}  cpu ms/req: {cpu}", flush=True)


def _med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(x, attr) for x in runs)


def _cell(runs: list[Run], attr: str, fmt: str) -> str:
    vals = [getattr(x, attr) for x in runs]
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.median(vals), fmt)} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"


def _cpu(runs: list[Run], key: str) -> float:
    return statistics.median(x.cpu_ms.get(key, 0.0) for x in runs)


def print_summary(closed: Rows, opened: Rows, rate: float) -> None:
    print("\nmedian (min-max) over rounds; CPU = ms of CPU per request (gateway process; both backends)")
    print("\n| gateway | load | req/s | p50 ms | p99 ms | gateway CPU | backends CPU |\n|---|---|---|---|---|---|---|")
    for (n, c), runs in list(closed.items()) + list(opened.items()):
        load = f"c={c:g}" if (n, c) in closed else f"{c:.0f} req/s offered"
        backends = sum(_cpu(runs, f"backend:{b}") for b in BACKENDS)
        print(f"| {n} | {load} | {_cell(runs, 'rps', '.0f')} | {_cell(runs, 'p50_ms', '.2f')} | "
              f"{_cell(runs, 'p99_ms', '.2f')} | {_cpu(runs, 'gateway'):.2f} | {backends:.2f} |")
    apollo = ("apollo-gateway", 16) in closed
    for ours in ("strangler", "strangler-proxy"):
        if apollo and (ours, 16) in closed:
            print(f"\n{ours}: throughput c=16 {_med(closed[(ours, 16)], 'rps') / _med(closed[('apollo-gateway', 16)], 'rps'):.2f}x "
                  f"Apollo (target >= 1.5x); p50 c=1 {_med(closed[(ours, 1)], 'p50_ms') / _med(closed[('apollo-gateway', 1)], 'p50_ms'):.2f}x "
                  f"Apollo (target <= 0.7x); gateway CPU/request {_cpu(closed[(ours, 16)], 'gateway') / _cpu(closed[('apollo-gateway', 16)], 'gateway'):.2f}x Apollo's")
    for base_name, shadow_name in SHADOW_PAIRS:
        if (shadow_name, rate) not in opened:
            continue
        base, sh = _med(opened[(base_name, rate)], "p99_ms"), _med(opened[(shadow_name, rate)], "p99_ms")
        per_round = ", ".join(f"{(s.p99_ms / b.p99_ms - 1) * 100:+.0f} %"
                              for b, s in zip(opened[(base_name, rate)], opened[(shadow_name, rate)], strict=True))
        print(f"shadow cost {shadow_name} vs {base_name} at {rate:.0f} req/s offered: median p99 {sh:.2f} vs "
              f"{base:.2f} ms ({(sh / base - 1) * 100:+.0f} %, target <= +10 %); per round {per_round}")
        # All rounds' requests together: a p99 set by ~1 % of many more requests than one round's.
        pooled = [_quantiles([x for r in opened[(name, rate)] for x in r.latencies])[1] for name in (base_name, shadow_name)]
        print(f"  pooled over rounds: p99 {pooled[1]:.2f} vs {pooled[0]:.2f} ms ({(pooled[1] / pooled[0] - 1) * 100:+.0f} %)")
        if (base_name, 16) not in closed:
            continue
        b16, s16 = _med(closed[(base_name, 16)], "p99_ms"), _med(closed[(shadow_name, 16)], "p99_ms")
        print(f"  (at saturation, c=16: p99 {s16:.2f} vs {b16:.2f} ms, {(s16 / b16 - 1) * 100:+.0f} %: the shadow "
              "fetch is one more backend request competing for the same two cores)")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "serve-backend":
        import uvloop

        uvloop.run(serve_backend(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif cmd == "serve-gateway":
        import uvloop

        uvloop.run(serve_gateway(json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    elif cmd == "serve-proxy":
        import uvloop

        uvloop.run(serve_proxy(json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    else:
        ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
        ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per closed-loop run")
        ap.add_argument("--rounds", type=int, default=3)
        ap.add_argument("--rate", type=float, default=0.0, help="offered req/s for the shadow-cost runs")
        ap.add_argument("--shadow-rounds", type=int, default=0, help="rounds of the shadow-cost runs (default --rounds)")
        ap.add_argument("--skip-apollo", action="store_true")
        ap.add_argument("--skip-proxy", action="store_true")
        asyncio.run(main(ap.parse_args()))
