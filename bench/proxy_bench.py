"""Proxy benchmark: strangler's data plane against Debian's nginx, on loopback.

The proxy measured is the real assembled one (``ProxyServer``): routing,
metrics and the JSON access log on, and in shadow mode every mirrored pair
diffed by the diff engine and written to the results store (SQLite).

    flock /tmp/strangler/bench.lock .venv/bin/python bench/proxy_bench.py          # ~5 minutes
    flock /tmp/strangler/bench.lock .venv/bin/python bench/proxy_bench.py --quick  # 1 repeat, 3 s runs

Needs ``nginx``, ``wrk`` and ``hey`` (``apt-get install -y nginx wrk hey``);
without nginx only the strangler rows are measured, without hey the fixed-rate
rows are skipped. A naive aiohttp proxy (the issue's yardstick, ~3.3x nginx's
CPU on the reference box) is measured too, to calibrate this box's ratios.
The proxy (or nginx, with one worker) is pinned alone on
CPU 0, the upstreams and the load generator on CPU 1 (``taskset``). Each run
is repeated and the median printed (with the spread), and for every row:

* ``cpu``: CPU time of the proxy's processes per request -- utime+stime from
  ``/proc/<pid>/stat`` of the process and *all* its descendants (nginx master
  and worker), read again for every run, divided by the requests wrk counted;
* ``core``: busy time of CPU 0 (``/proc/stat``: everything but idle/iowait,
  so it includes the loopback softirq work the kernel does for the proxy)
  per request -- the issue's "core busy time"; other tenants of a shared box
  land there too, so it is an upper bound;
* ``conns``: TCP connections the upstream accepted during the run (a proxy
  that keeps connections alive opens about ``c`` of them, not one per request).

The endpoint rows (``--only endpoints`` runs just them) measure what choosing
an endpoint costs: two proxies in legacy pass-through, one with the legacy
upstream as one ``url:``, one with it as three ``endpoints:`` (the same
upstream process listening on three ports), started afresh for each of
``--pairs`` rounds and loaded at the same time, sharing CPU 0; printed: each
one's CPU per request and the median of the rounds' differences.
``--calibrate`` puts one endpoint on both sides: what the method reads when
nothing differs (its noise and bias).

The cell rows (``--only cells``) measure what a ``cells:`` section costs, the
same way: one proxy without it, one with 16 cells (``--cells N``) keyed by the
``X-Tenant`` header, every cell's upstreams the same upstream process; both
loads name 10,000 tenants in turn (a wrk Lua script of prebuilt requests).
``--calibrate`` puts no cells on both sides.

The fixed-rate rows drive the proxy with ``hey -q`` at the same offered rate
(30 % of the slower proxy mode's saturation throughput, at most 2000/s,
unless ``--rate``) in
legacy and in shadow mode and compare client p99. The "dead" and "slow" rows
mirror to a closed port / an upstream that answers after 10 s and sample the
proxy's RSS during the whole run (peak = ``VmHWM``, the high-water mark since
the process started).

The POST rows send a 66-byte JSON body (wrk with a Lua script); in shadow
mode the catch-all route mirrors writes as dry runs, as nginx's ``mirror``
mirrors the body. ``--workers-cpus 0,1`` adds two rows: ``strangler proxy
--workers 1`` and ``--workers 2`` on the same CPUs, c=64, legacy mode. Two
workers can only scale when the CPUs they get are free of the upstream and
the load generator; on a 2-core box those share CPU 1, so the rows there show
what a second worker costs or gains under that contention, not the scaling
(run them on 4+ cores with the upstreams and wrk moved to the others).

Figures on a shared 2-core box are noisy; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU, LOAD_CPU = "0", "1"
# The fixed-rate rows offer this share of the slower proxy mode's saturation
# throughput (hey shares CPU 1 with the upstreams, so keep it modest).
AUTO_RATE_SHARE, MAX_AUTO_RATE = 0.3, 2000
BODY = json.dumps({"id": "tt0000001", "title": "x" * 900, "year": 1999, "genres": ["Drama"]}).encode()


# ---------------------------------------------------------------- the upstream
class _Upstream(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 server: answers every request with ~1 KB of JSON;
    ``GET /__conns`` answers the number of connections accepted so far."""

    delay = 0.0
    accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""
        _Upstream.accepted += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(rest) < length:
                return
            self.buf = rest[length:]
            body = str(_Upstream.accepted).encode() if head.startswith(b"GET /__conns ") else BODY
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._write, resp)
            else:
                self.t.write(resp)  # type: ignore[attr-defined]

    def _write(self, data: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(data)  # type: ignore[attr-defined]


def serve_upstream(ports: list[int], delay: float) -> None:
    """One upstream process, listening on every port of ``ports`` (endpoints of one backend)."""
    import uvloop

    _Upstream.delay = delay

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(_Upstream, "127.0.0.1", port, backlog=1024) for port in ports]
        await asyncio.gather(*(server.serve_forever() for server in servers))

    uvloop.run(main())


# ---------------------------------------------------------------- the proxy
def legacy_upstream(ports: list[int]) -> str:
    """The legacy upstream's YAML: one ``url:``, or one endpoint per port, each in its own zone."""
    if len(ports) == 1:
        return f'{{url: "http://127.0.0.1:{ports[0]}"}}'
    endpoints = ", ".join(f'{{url: "http://127.0.0.1:{p}", zone: zone-{i}}}' for i, p in enumerate(ports))
    return f"{{endpoints: [{endpoints}]}}"


def cells_section(cells: int, legacy: list[int], candidate: int) -> str:
    """A ``cells:`` section of ``cells`` cells keyed by ``X-Tenant``, each giving the
    same legacy and candidate upstreams: the backends stay those of a proxy without cells."""
    if not cells:
        return ""
    cand = f'{{url: "http://127.0.0.1:{candidate}"}}'
    listed = "".join(f"    - {{name: c{i}, upstreams: {{legacy: {legacy_upstream(legacy)}, candidate: {cand}}}}}\n"
                     for i in range(cells))
    return f"cells:\n  partition_key: header:{TENANT_HEADER}\n  cells:\n{listed}"


def write_config(workdir: Path, legacy: list[int], candidate: int, mode: str, cells: int = 0) -> Path:
    """The bench's strangler.yaml: a realistic table of a few specific routes,
    and the benchmark's path either unmatched (legacy pass-through) or caught
    by a shadowing catch-all that mirrors writes as dry runs (the POST rows: the
    route takes POST too, a route's methods being GET and HEAD unless listed);
    ``cells``: that many cells (:func:`cells_section`), or none."""
    catch_all = ("legacy" if mode == "legacy" else "shadow, shadow_writes: dry-run") + ", methods: [GET, HEAD, POST]"
    config = workdir / "strangler.yaml"
    config.write_text(f"""
proxy: {{admin_tokens: {{bench: bench-token}}}}
upstreams:
  legacy: {legacy_upstream(legacy)}
  candidate: {{url: "http://127.0.0.1:{candidate}", connect_timeout_s: 1}}
shadow: {{timeout_s: 2}}
compare: {{ignore: ["$..request_id"]}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: candidate, mode: shadow}}
  - {{name: cast, path: "/api/titles/{{id}}/cast", target: candidate, mode: canary, percent: 10,
      partition_key: "path:id"}}
  - {{name: people, path: "/api/people/{{id}}", target: candidate, mode: extracted}}
  - {{name: bench, path: "/bench/{{*rest}}", target: candidate, mode: {catch_all}}}
{cells_section(cells, legacy, candidate)}""")
    return config


def serve_proxy(port: int, legacy: list[int], candidate: int, mode: str, log_path: str, cells: int = 0) -> None:
    """The real assembled proxy (``ProxyServer``): the diff engine compares every
    mirrored pair and the results store writes them (SQLite) -- what users run.
    ``legacy``: the legacy upstream's ports (several: one endpoint each); ``cells``:
    that many cells (:func:`cells_section`), or none."""
    import tempfile

    import uvloop

    sys.path.insert(0, str(ROOT))
    from strangler_proxy.dataplane.accesslog import write_access_log_to
    from strangler_proxy.server import ProxyServer

    # A realistic table: a few specific routes, and the benchmark's path either
    # unmatched (legacy pass-through) or caught by a shadowing catch-all.
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    config = write_config(workdir, legacy, candidate, mode, cells)

    async def main() -> None:
        handler = write_access_log_to(log_path)
        state = f"sqlite+aiosqlite:///{workdir / 'control.sqlite3'}"
        async with ProxyServer(config, port=port, admin_port=0, state_url=state, watch=False):
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        handler.close()

    uvloop.run(main())


def serve_naive(port: int, legacy: int) -> None:
    """The issue's yardstick: a straightforward aiohttp proxy (no routing,
    metrics or logs; one default ClientSession), to calibrate this box's ratios."""
    import uvloop
    from aiohttp import ClientSession, web

    hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

    async def main() -> None:
        session = ClientSession(auto_decompress=False)

        async def handle(request: web.Request) -> web.Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            async with session.request(request.method, f"http://127.0.0.1:{legacy}{request.path_qs}",
                                       headers=headers, data=await request.read() or None) as resp:
                body = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in hop}
                return web.Response(status=resp.status, body=body, headers=out)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await session.close()

    uvloop.run(main())


# ---------------------------------------------------------------- nginx
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log;
  # nginx closes a keep-alive connection after 1000 requests by default, both
  # to clients and to upstreams; the proxy never does, so neither should nginx.
  keepalive_requests 1000000;
  upstream legacy {{ server 127.0.0.1:{legacy}; keepalive 64; keepalive_requests 1000000; }}
  upstream candidate {{ server 127.0.0.1:{candidate}; keepalive 64; keepalive_requests 1000000; }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://legacy; }}
    location /bench/ {{ {mirror} proxy_pass http://legacy; }}
    location = /mirror {{ internal; proxy_pass http://candidate$request_uri;
                          proxy_connect_timeout 1s; proxy_read_timeout 2s; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def upstream_conns(port: int) -> int:
    """Connections the bench upstream on ``port`` has accepted (counting this one)."""
    with socket.create_connection(("127.0.0.1", port), 2.0) as s:
        s.sendall(b"GET /__conns HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and len(body) >= int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]):
                return int(body)
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("the bench upstream closed without answering")
            data += chunk


def descendants(pid: int) -> list[int]:
    """The process and all its descendants (nginx master + worker), read now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of every thread of these processes (the stat line sums threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def core_busy_seconds(cpu: str) -> float:
    """Non-idle time of one CPU from /proc/stat (user..steal minus idle and iowait)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:9]]
            return (sum(v) - v[3] - v[4]) / CLK_TCK
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def rss_mb(pids: list[int], field: str = "VmRSS:") -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class RssSampler:
    """Samples the RSS of a process tree every 0.25 s while a row runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.samples.append(rss_mb(descendants(self.pid)))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us: float | None  # the proxy's process tree, per request
    core_us: float | None  # CPU 0 busy time, per request
    conns: int | None  # upstream connections accepted during the run


def _ms(text: str) -> float:
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


# The POST rows' body: 66 bytes of JSON, as in the issue's measurements.
POST_BODY = '{"title":"tt0000001","value":7,"user":"u-0001","note":"bench vot"}'
POST_LUA = f"""wrk.method = "POST"
wrk.body = '{POST_BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def post_script() -> Path:
    """The POST rows' wrk script (:data:`POST_LUA`), written to the temporary directory."""
    path = Path(tempfile.gettempdir()) / "strangler-bench-post.lua"
    path.write_text(POST_LUA)
    return path


def _wrk(port: int, conns: int, duration: float, script: Path | None = None) -> tuple[float, float, float, int]:
    """``wrk`` at full speed; ``script``: a Lua script that shapes the requests (:data:`TENANTS_LUA`,
    :data:`POST_LUA`)."""
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s", "--latency",
         *(["-s", str(script)] if script else []), f"http://127.0.0.1:{port}/bench/item?id=1"],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = out.splitlines()
    rps = float(next(line.split()[1] for line in lines if line.startswith("Requests/sec")))
    p50 = _ms(next(line.split()[1] for line in lines if line.strip().startswith("50%")))
    p99 = _ms(next(line.split()[1] for line in lines if line.strip().startswith("99%")))
    reqs = int(next(line.split()[0] for line in lines if "requests in" in line))
    errors = [line.strip() for line in lines if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        print("   wrk:", "; ".join(errors))
    return rps, p50, p99, reqs


def _hey(port: int, rate: int, duration: float) -> tuple[float, float, float, int]:
    """``hey`` at a fixed offered rate: 16 workers x rate/16 per second each."""
    workers = 16
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "hey", "-c", str(workers), "-q", f"{rate / workers:.2f}",
         "-z", f"{int(duration)}s", f"http://127.0.0.1:{port}/bench/item?id=1"],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = [line.strip() for line in out.splitlines()]
    rps = float(next(line.split()[1] for line in lines if line.startswith("Requests/sec")))
    p50 = float(next(line.split()[2] for line in lines if line.startswith("50% in"))) * 1000
    p99 = float(next(line.split()[2] for line in lines if line.startswith("99% in"))) * 1000
    statuses = [line for line in lines if line.startswith("[")]
    reqs = sum(int(line.split()[1]) for line in statuses)
    if any(not line.startswith("[200]") for line in statuses) or "Error distribution:" in lines:
        print("   hey:", "; ".join(statuses), "(errors)" if "Error distribution:" in lines else "")
    return rps, p50, p99, reqs


def measure_once(port: int, load: tuple[str, int], duration: float, proxy_pid: int | None,
                 upstream_port: int, script: Path | None = None) -> Run:
    conns_before = upstream_conns(upstream_port)
    pids = descendants(proxy_pid) if proxy_pid else []
    cpu0, core0 = cpu_seconds(pids), core_busy_seconds(PROXY_CPU)
    kind, n = load
    if kind == "hey":
        rps, p50, p99, reqs = _hey(port, n, duration)
    else:
        rps, p50, p99, reqs = _wrk(port, n, duration, post_script() if kind == "wrk-post" else script)
    cpu1, core1 = cpu_seconds(pids), core_busy_seconds(PROXY_CPU)
    conns = upstream_conns(upstream_port) - conns_before - 1  # minus our own /__conns probe
    cpu = (cpu1 - cpu0) / reqs * 1e6 if pids and reqs else None
    core = (core1 - core0) / reqs * 1e6 if pids and reqs else None
    return Run(rps, p50, p99, reqs, cpu, core, conns)


def median_run(runs: list[Run]) -> Run:
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return Run(
        statistics.median(r.rps for r in runs), statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs), int(statistics.median(r.requests for r in runs)),
        med([r.cpu_us for r in runs]), med([r.core_us for r in runs]),
        int(statistics.median(r.conns for r in runs if r.conns is not None)),
    )


ENDPOINTS = 3  # the endpoint rows: one endpoint vs this many
ENDPOINT_CHOICE = "endpoint choice"  # results key of the difference
CELLS = 16  # the cell rows: no cells section vs this many cells
CELL_CHOICE = "cell choice"  # results key of the difference
TENANT_HEADER, TENANTS = "X-Tenant", 10_000
# The cell rows' load: every request names one of TENANTS tenants in turn (prebuilt, so wrk's
# own cost stays that of a fixed request), spreading the keys over every cell.
TENANTS_LUA = f"""
local requests, n = {{}}, 0
function init(args)
  for i = 1, {TENANTS} do
    requests[i] = wrk.format(nil, nil, {{["{TENANT_HEADER}"] = "tenant-" .. i}})
  end
end
function request()
  n = n % #requests + 1
  return requests[n]
end
"""


def measure_together(targets: list[tuple[int, int]], duration: float, upstream: int,
                     script: Path | None = None) -> list[Run]:
    """:func:`measure_once` on several proxies (port, pid) at the same time, each with its own wrk."""
    out: list[Run | Exception | None] = [None] * len(targets)

    def one(i: int) -> None:
        try:
            out[i] = measure_once(targets[i][0], ("wrk", 32), duration, targets[i][1], upstream, script)
        except Exception as exc:  # raised again below, in the caller's thread
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = []
    for r in out:
        if not isinstance(r, Run):
            raise RuntimeError(f"a run failed: {r!r}")
        runs.append(r)
    return runs


@dataclass(frozen=True)
class Side:
    """One of the two proxies of a paired comparison."""

    label: str  # its row, e.g. "legacy, 3 endpoints c=32"
    legacy: tuple[int, ...]  # the legacy upstream's ports (several: one endpoint each)
    cells: int = 0  # cells in its config (0: no cells section)


def paired_rows(stack: Stack, tmp: Path, results: dict[str, Run], pairs: int, duration: float,
                sides: tuple[Side, Side], what: str, key: str, script: Path | None = None) -> None:
    """What the second side costs over the first: two proxies in legacy pass-through
    that differ only as ``sides`` say, on the same upstream process.

    Each of ``pairs`` rounds starts both proxies afresh and loads them *at the
    same time* (a wrk each, c=32, shaped by ``script``), sharing CPU 0, then
    stops them: whatever else the box does in a run hits both alike (on a
    shared VM, runs in turns drift by +-15 % from one to the next, far more
    than the difference), and what makes one process a few percent faster than
    an identical one (hash seed, memory layout: a steady 3-8 us here) changes
    sides from round to round instead of biasing every run; the median of the
    rounds' differences is printed as ``what`` and kept as ``results[key]``.
    Sharing a core costs each proxy some batching, so both figures are above
    the solo rows'.
    """
    nowhere = free_port()  # the candidate: never asked in legacy mode
    upstream = sides[0].legacy[0]
    rounds: list[list[Run]] = []
    for r in range(pairs):
        procs: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
        for i in (0, 1) if r % 2 == 0 else (1, 0):  # which one starts first changes too
            port, side = free_port(), sides[i]
            procs[i] = port, stack.start(PROXY_CPU, [PY, __file__, "--serve-proxy", str(port),
                                                     ",".join(map(str, side.legacy)), str(nowhere), "legacy",
                                                     str(tmp / f"{key.replace(' ', '-')}-{r}-{i}.log"),
                                                     str(side.cells)], port)
        targets = [(procs[i][0], procs[i][1].pid) for i in (0, 1)]
        measure_together(targets, 1, upstream, script)  # warm-up: pooled connections, caches
        rounds.append(measure_together(targets, duration, upstream, script))
        for i in (0, 1):
            stack.stop(procs[i][1])
    for i, side in enumerate(sides):
        rs = [pair[i] for pair in rounds]
        m = results[f"strangler {side.label} #{i}"] = median_run(rs)
        assert m.cpu_us is not None
        print(f"  {side.label:<30} {m.rps:7.0f} req/s ({min(r.rps for r in rs):.0f}..{max(r.rps for r in rs):.0f})"
              f"  cpu {m.cpu_us:6.1f} us/req", flush=True)
    cpu = sorted((b.cpu_us or 0.0) - (a.cpu_us or 0.0) for a, b in rounds)  # both have a pid
    results[key] = Run(0, 0, 0, 0, statistics.median(cpu), None, None)
    print(f"  {what}: {statistics.median(cpu):+.1f} us CPU per request (median of {pairs} rounds, "
          f"{cpu[0]:+.1f}..{cpu[-1]:+.1f})", flush=True)


def endpoint_rows(stack: Stack, tmp: Path, results: dict[str, Run], pairs: int, duration: float,
                  counts: tuple[int, int] = (1, ENDPOINTS)) -> None:
    """What choosing an endpoint costs: the legacy upstream as one ``url:`` and as
    ``ENDPOINTS`` endpoints (one upstream process on that many ports), in
    :func:`paired_rows`. ``counts``: the endpoints of the two proxies
    (``--calibrate``: one and one, the method's own noise)."""
    ports = [free_port() for _ in range(max(counts))]
    stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", *map(str, ports)], ports[0])
    for port in ports[1:]:
        wait_port(port)

    def side(n: int) -> Side:
        return Side(f"legacy, {n} endpoint{'s' if n > 1 else ''} c=32", tuple(ports[:n]))

    paired_rows(stack, tmp, results, pairs, duration, (side(counts[0]), side(counts[1])),
                f"choosing an endpoint ({counts[1]} endpoints vs {counts[0]})", ENDPOINT_CHOICE)


def cell_rows(stack: Stack, tmp: Path, results: dict[str, Run], pairs: int, duration: float,
              counts: tuple[int, int] = (0, CELLS)) -> None:
    """What choosing the cell costs: no ``cells:`` section against ``CELLS`` cells
    keyed by the ``X-Tenant`` header, every cell's legacy upstream the same
    upstream process (the backend is identical for both), in :func:`paired_rows`;
    both loads send the same requests, naming ``TENANTS`` tenants in turn.
    ``counts``: the cells of the two proxies (``--calibrate``: none and none)."""
    port = free_port()
    stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(port)], port)
    script = tmp / "tenants.lua"
    script.write_text(TENANTS_LUA)

    def cells(n: int) -> str:
        return f"{n} cell{'s' if n > 1 else ''}" if n else "no cells"

    def side(n: int) -> Side:
        return Side(f"legacy, {cells(n)} c=32", (port,), n)

    paired_rows(stack, tmp, results, pairs, duration, (side(counts[0]), side(counts[1])),
                f"choosing the cell ({cells(counts[1])} vs {cells(counts[0])})", CELL_CHOICE, script)


class Stack:
    """Child processes started by the benchmark, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cpu: str, args: list[str], port: int, children: int = 0,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start pinned to ``cpu``; wait for the port and for ``children`` forked workers."""
        proc = subprocess.Popen(["taskset", "-c", cpu, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **(env or {})} if env else None, cwd=ROOT)
        self.procs.append(proc)
        wait_port(port)
        deadline = time.monotonic() + 10
        while len(descendants(proc.pid)) < 1 + children and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repeat of 3 s runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rate", type=int, default=0, help="offered rate of the fixed-rate rows (0: automatic)")
    ap.add_argument("--only", choices=("strangler", "endpoints", "cells"),
                    help="strangler: skip the direct and nginx rows; endpoints: only the one-vs-three endpoint rows; "
                         f"cells: only the no-cells-vs-{CELLS}-cells rows")
    ap.add_argument("--pairs", type=int, default=0,
                    help="rounds of the endpoint and cell rows (default: --repeats, at least 3)")
    ap.add_argument("--calibrate", action="store_true",
                    help="endpoint (cell) rows with one endpoint (no cells) on both sides: what the method reads "
                         "when nothing differs")
    ap.add_argument("--cells", type=int, default=CELLS,
                    help=f"cells of the second proxy of the cell rows (default {CELLS})")
    ap.add_argument("--workers-cpus", default="",
                    help="CPUs (taskset list, e.g. 0,1 or 0-3) for the --workers rows: 1 and 2 workers on the same "
                         "CPUs; empty: skipped. For 2 workers to scale, these must be free of the upstream and "
                         "the load generator, which run on CPU 1: on a 2-core box they cannot be")
    ap.add_argument("--serve-upstream", type=int, nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--serve-proxy", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--serve-naive", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        return serve_upstream(args.serve_upstream, args.delay)
    if args.serve_naive:
        return serve_naive(*args.serve_naive)
    if args.serve_proxy:
        port, legacy, cand, mode, log, cells = args.serve_proxy
        return serve_proxy(int(port), [int(p) for p in legacy.split(",")], int(cand), mode, log, int(cells))
    if args.quick:
        args.repeats, args.duration = 1, 3

    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y nginx wrk hey")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if args.only:
        nginx = None
    elif not nginx:
        print("nginx is missing (apt-get install -y nginx): nginx rows are skipped")
    hey = shutil.which("hey")
    if not hey:
        print("hey is missing (apt-get install -y hey): fixed-rate rows are skipped")

    stack = Stack()
    tmp = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    results: dict[str, Run] = {}
    rss: dict[str, tuple[float, float, float]] = {}  # label -> (RSS after 1 s, RSS at the end, peak)

    def measure(label: str, port: int, pid: int | None, load: tuple[str, int], upstream: int) -> Run:
        runs = [measure_once(port, load, args.duration, pid, upstream) for _ in range(args.repeats)]
        results[label] = m = median_run(runs)
        spread = f"({min(r.rps for r in runs):.0f}..{max(r.rps for r in runs):.0f})" if len(runs) > 1 else ""
        cpu = f"cpu {m.cpu_us:6.1f} core {m.core_us:6.1f} us/req" if m.cpu_us is not None else ""
        print(f"  {label:<30} {m.rps:7.0f} req/s {spread:<13} p50 {m.p50_ms:6.3f} p99 {m.p99_ms:6.3f} ms  {cpu}"
              f"  conns {m.conns}", flush=True)
        return m

    pairs = args.pairs or max(3, args.repeats)
    try:
        if args.only == "endpoints":
            print(f"endpoint rows: {pairs} rounds of {args.duration:.0f} s, two fresh proxies at once (a wrk c=32 "
                  f"each), on CPU {PROXY_CPU}; the upstream and the load on CPU {LOAD_CPU}")
            return endpoint_rows(stack, tmp, results, pairs, args.duration,
                                 counts=(1, 1) if args.calibrate else (1, ENDPOINTS))
        if args.only == "cells":
            print(f"cell rows: {pairs} rounds of {args.duration:.0f} s, two fresh proxies at once (a wrk c=32 "
                  f"each, {TENANTS:,} tenants in turn), on CPU {PROXY_CPU}; the upstream and the load on CPU {LOAD_CPU}")
            return cell_rows(stack, tmp, results, pairs, args.duration, counts=(0, 0) if args.calibrate else (0, args.cells))
        legacy_port, cand_port = free_port(), free_port()
        stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(legacy_port)], legacy_port)
        stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(cand_port)], cand_port)
        print(f"upstream body {len(BODY)} bytes; median of {args.repeats} x {args.duration:.0f} s per row "
              f"(spread of req/s in brackets); proxy on CPU {PROXY_CPU}, upstreams + load on CPU {LOAD_CPU}")

        if not args.only:
            measure("direct c=1", legacy_port, None, ("wrk", 1), legacy_port)
            measure("direct c=32", legacy_port, None, ("wrk", 32), legacy_port)

        def run_nginx(label: str, mirror: bool, candidate: int) -> None:
            d = tmp / label
            d.mkdir()
            port = free_port()
            conf = NGINX_CONF.format(dir=d, legacy=legacy_port, candidate=candidate, port=port,
                                     mirror="mirror /mirror;" if mirror else "")
            (d / "nginx.conf").write_text(conf)
            proc = stack.start(PROXY_CPU, [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                               port, children=1)
            if not mirror:
                measure(f"{label} c=1", port, proc.pid, ("wrk", 1), legacy_port)
            measure(f"{label} c=32", port, proc.pid, ("wrk", 32), legacy_port)
            measure(f"{label} POST c=32", port, proc.pid, ("wrk-post", 32), legacy_port)
            stack.stop(proc)

        def run_proxy(label: str, mode: str, candidate: int, loads: list[tuple[str, int]]) -> None:
            port = free_port()
            proc = stack.start(PROXY_CPU, [PY, __file__, "--serve-proxy", str(port), str(legacy_port),
                                           str(candidate), mode, str(tmp / f"{label}.log"), "0"], port)
            with RssSampler(proc.pid) as sampler:
                for kind, n in loads:
                    suffix = {"wrk": f"c={n}", "wrk-post": f"POST c={n}"}.get(kind, f"@{n}/s")
                    measure(f"{label} {suffix}", port, proc.pid, (kind, n), legacy_port)
            pids = descendants(proc.pid)
            samples = sampler.samples or [rss_mb(pids)]
            rss.setdefault(label, (samples[min(4, len(samples) - 1)], samples[-1], rss_mb(pids, "VmHWM:")))
            stack.stop(proc)

        if nginx:
            run_nginx("nginx", False, cand_port)
            run_nginx("nginx+mirror", True, cand_port)
        if not args.only:
            port = free_port()
            naive = stack.start(PROXY_CPU, [PY, __file__, "--serve-naive", str(port), str(legacy_port)], port)
            measure("naive aiohttp proxy c=32", port, naive.pid, ("wrk", 32), legacy_port)
            stack.stop(naive)
        run_proxy("strangler legacy", "legacy", cand_port, [("wrk", 1), ("wrk", 32), ("wrk-post", 32)])
        run_proxy("strangler shadow", "shadow", cand_port, [("wrk", 32), ("wrk-post", 32)])
        if hey:
            slower = min(results["strangler legacy c=32"].rps, results["strangler shadow c=32"].rps)
            rate = args.rate or min(MAX_AUTO_RATE, int(slower * AUTO_RATE_SHARE / 100) * 100)
            run_proxy("strangler legacy", "legacy", cand_port, [("hey", rate)])
            run_proxy("strangler shadow", "shadow", cand_port, [("hey", rate)])
            results["rate"] = Run(rate, 0, 0, 0, None, None, None)
        run_proxy("strangler shadow dead", "shadow", free_port(), [("wrk", 32)])
        slow_port = free_port()
        slow = stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(slow_port), "--delay", "10"], slow_port)
        run_proxy("strangler shadow slow", "shadow", slow_port, [("wrk", 32)])
        stack.stop(slow)
        if args.workers_cpus:
            for count in (1, 2):  # the same CPUs for both: only the number of workers differs
                port = free_port()
                d = tmp / f"workers-{count}"
                d.mkdir()
                config = write_config(d, [legacy_port], cand_port, "legacy")
                proc = stack.start(args.workers_cpus, [
                    PY, "-m", "strangler_proxy.cli.main", "proxy", "--config", str(config), "--port", str(port),
                    "--admin-port", str(free_port()), "--workers", str(count), "--access-log", str(d / "access.log"),
                ], port, children=count if count > 1 else 0, env={"STRANGLER_DATA_DIR": str(d / "data")})
                time.sleep(1.0 if count > 1 else 0.0)  # the other workers start after worker 0
                measure(f"strangler {count} worker{'s' if count > 1 else ''} c=64", port, proc.pid, ("wrk", 64),
                        legacy_port)
                stack.stop(proc)
        endpoint_rows(stack, tmp, results, pairs, args.duration)
        cell_rows(stack, tmp, results, pairs, args.duration)
    finally:
        stack.stop_all()

    print()
    report(results, rss, bool(nginx))


def report(r: dict[str, Run], rss: dict[str, tuple[float, float, float]], have_nginx: bool) -> None:
    s, n = "strangler legacy", "nginx"
    print("| figure | strangler | nginx | ratio | target |")
    print("|---|---|---|---|---|")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a is not None and b else "-"

    for c in ("c=32", "POST c=32", "c=1"):
        sr, nr = r[f"{s} {c}"], r.get(f"{n} {c}")
        for what, sv, nv in (("process CPU", sr.cpu_us, nr and nr.cpu_us), ("core-0 busy", sr.core_us, nr and nr.core_us)):
            nv_txt = f"{nv:.1f} us" if nv is not None else "-"
            print(f"| {what}/request, legacy pass-through {c} | {sv:.1f} us | {nv_txt} | {ratio(sv, nv)} | "
                  f"<= 2.0x |")
    if have_nginx:
        st, nt = r[f"{s} c=32"].rps, r[f"{n} c=32"].rps
        print(f"| throughput c=32 | {st:.0f}/s | {nt:.0f}/s | {st / nt:.2f}x | >= 0.8x |")
        direct1 = r["direct c=1"].p50_ms
        sa, na = r[f"{s} c=1"].p50_ms - direct1, r[f"{n} c=1"].p50_ms - direct1
        print(f"| added p50 c=1 (direct {direct1 * 1000:.0f} us) | {sa * 1000:.0f} us | {na * 1000:.0f} us | "
              f"{sa / na if na > 0 else float('nan'):.2f}x | |")
        s1, n1 = r[f"{s} c=1"].p50_ms, r[f"{n} c=1"].p50_ms
        print(f"| GET p50 c=1 | {s1 * 1000:.0f} us | {n1 * 1000:.0f} us | {s1 / n1:.2f}x | <= 1.5x |")
        sm, nm = r["strangler shadow c=32"], r["nginx+mirror c=32"]
        print(f"| shadow (mirror all, diff + store) throughput c=32 | {sm.rps:.0f}/s | {nm.rps:.0f}/s (mirror) | "
              f"{sm.rps / nm.rps:.2f}x | >= 1.3x |")
        smp, nmp = r["strangler shadow POST c=32"], r["nginx+mirror POST c=32"]
        print(f"| shadow POST (dry-run mirror) throughput c=32 | {smp.rps:.0f}/s | {nmp.rps:.0f}/s (mirror) | "
              f"{smp.rps / nmp.rps:.2f}x | >= 1.3x |")
        print(f"| shadow CPU/request c=32 (process) | {sm.cpu_us:.0f} us | {nm.cpu_us:.0f} us (mirror) | "
              f"{ratio(sm.cpu_us, nm.cpu_us)} | |")
        print(f"| nginx throughput / direct c=32 | | {nt / r['direct c=32'].rps:.2f}x | | ref ~0.57x |")
        nv = r.get("naive aiohttp proxy c=32")
        if nv is not None:
            print(f"| yardstick: naive aiohttp proxy CPU/request c=32 (process / core) | {nv.cpu_us:.0f} us / "
                  f"{nv.core_us:.0f} us | | {ratio(nv.cpu_us, r[f'{n} c=32'].cpu_us)} / "
                  f"{ratio(nv.core_us, r[f'{n} c=32'].core_us)} | ref ~3.3x |")
        print(f"| nginx+mirror / nginx throughput c=32 | | {nm.rps / nt:.2f}x | | ref ~0.35x |")
    if "rate" in r:
        rate = int(r["rate"].rps)
        lg, sh = r[f"{s} @{rate}/s"], r[f"strangler shadow @{rate}/s"]
        print(f"| p99 at a fixed {rate}/s: shadow vs legacy | {sh.p99_ms:.2f} ms vs {lg.p99_ms:.2f} ms "
              f"(p50 {sh.p50_ms:.2f} vs {lg.p50_ms:.2f}) | | {sh.p99_ms / lg.p99_ms:.2f}x | <= 1.10x |")
    for label in ("strangler shadow dead", "strangler shadow slow"):
        first, last, peak = rss[label]
        print(f"| {label} c=32 | {r[f'{label} c=32'].rps:.0f}/s; RSS {first:.0f} -> {last:.0f} MB, peak {peak:.0f} MB"
              " | | | flat |")
    if ENDPOINT_CHOICE in r:
        choice = r[ENDPOINT_CHOICE]
        print(f"| choosing an endpoint: process CPU/request, {ENDPOINTS} endpoints vs 1, c=32 | "
              f"{choice.cpu_us:+.1f} us | | | <= 3 us |")
    if CELL_CHOICE in r:
        print(f"| choosing the cell: process CPU/request, {CELLS} cells vs no cells section, c=32 | "
              f"{r[CELL_CHOICE].cpu_us:+.1f} us | | | <= 5 us |")
    print(f"| peak RSS legacy / shadow | {rss[s][2]:.0f} MB / {rss['strangler shadow'][2]:.0f} MB | | | |")
    one, two = r.get("strangler 1 worker c=64"), r.get("strangler 2 workers c=64")
    if one is not None and two is not None:
        print(f"| --workers 2 vs 1 throughput c=64 (same CPUs) | {two.rps:.0f}/s vs {one.rps:.0f}/s | | "
              f"{two.rps / one.rps:.2f}x | >= 1.6x |")


if __name__ == "__main__":
    main()
