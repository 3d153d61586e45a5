"""Proxy benchmark: strangler's data plane against Debian's nginx, on loopback.

    .venv/bin/python bench/proxy_bench.py            # full run, ~3 minutes
    .venv/bin/python bench/proxy_bench.py --quick    # 1 repeat, 3 s runs

Needs ``nginx`` and ``wrk`` (``sudo apt-get install -y nginx wrk``); without
them only the strangler rows are measured. The proxy (or nginx) is pinned alone
on CPU 0, the upstreams and wrk on CPU 1 (``taskset``). Each wrk run is repeated
and the median printed, with the proxy's CPU time per request (utime+stime of
its process(es) from /proc, before/after, divided by the requests wrk counted)
and the ratios to nginx. Shadow runs mirror every request to a candidate; the
"dead" and "slow" rows point the candidate at a closed port / an upstream that
answers after 10 s and report the proxy's peak RSS.

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
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU, LOAD_CPU = "0", "1"
BODY = json.dumps({"id": "tt0000001", "title": "x" * 900, "year": 1999, "genres": ["Drama"]}).encode()


# ---------------------------------------------------------------- the upstream
class _Upstream(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 server: answers every request with ~1 KB of JSON."""

    delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""

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
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._write, resp)
            else:
                self.t.write(resp)  # type: ignore[attr-defined]

    def _write(self, data: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(data)  # type: ignore[attr-defined]


def serve_upstream(port: int, delay: float) -> None:
    import uvloop

    _Upstream.delay = delay

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- the proxy
def serve_proxy(port: int, legacy: int, candidate: int, mode: str, log_path: str) -> None:
    import uvloop

    sys.path.insert(0, str(ROOT))
    from strangler_proxy.accesslog import write_access_log_to
    from strangler_proxy.config import load_config_text
    from strangler_proxy.proxy_app import start_proxy
    from strangler_proxy.runtime import ProxyRuntime
    from strangler_proxy.shadow import BytesComparator, ShadowDispatcher

    # A realistic table: a few specific routes, and the benchmark's path either
    # unmatched (legacy pass-through) or caught by a shadowing catch-all.
    catch_all = "legacy" if mode == "legacy" else "shadow"
    config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  candidate: {{url: "http://127.0.0.1:{candidate}", connect_timeout_s: 1}}
shadow: {{timeout_s: 2}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: candidate, mode: shadow}}
  - {{name: cast, path: "/api/titles/{{id}}/cast", target: candidate, mode: canary, percent: 10,
      partition_key: "path:id"}}
  - {{name: people, path: "/api/people/{{id}}", target: candidate, mode: extracted}}
  - {{name: bench, path: "/bench/{{*rest}}", target: candidate, mode: {catch_all}}}
""")

    async def main() -> None:
        handler = write_access_log_to(log_path)
        runtime = ProxyRuntime(config)

        class Count:
            def observe(self, result: object) -> None:
                pass

        shadow = ShadowDispatcher(config.shadow, BytesComparator(), [Count()], runtime)
        await shadow.start()
        runner, _ = await start_proxy(runtime, shadow, "127.0.0.1", port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await shadow.stop()
        handler.close()

    uvloop.run(main())


# ---------------------------------------------------------------- nginx
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log;
  upstream legacy {{ server 127.0.0.1:{legacy}; keepalive 64; }}
  upstream candidate {{ server 127.0.0.1:{candidate}; keepalive 64; }}
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


def pids_of(pid: int) -> list[int]:
    """The process and its children (nginx master + worker)."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            out += [int(k) for k in kids]
    except OSError:
        pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def peak_rss_mb(pids: list[int]) -> float:
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024


@dataclass
class Run:
    rps: float
    p50_ms: float
    requests: int
    cpu_us: float | None


def _ms(text: str) -> float:
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def wrk(port: int, conns: int, duration: float, pids: list[int] | None) -> Run:
    before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s", "--latency",
         f"http://127.0.0.1:{port}/bench/item?id=1"],
        capture_output=True, text=True, check=True,
    ).stdout
    after = cpu_seconds(pids) if pids else 0.0
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    p50 = _ms(next(line.split()[1] for line in out.splitlines() if line.strip().startswith("50%")))
    reqs = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = [line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        print("   wrk:", "; ".join(errors))
    cpu = (after - before) / reqs * 1e6 if pids and reqs else None
    return Run(rps, p50, reqs, cpu)


def median_run(runs: list[Run]) -> Run:
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    return Run(
        statistics.median(r.rps for r in runs), statistics.median(r.p50_ms for r in runs),
        int(statistics.median(r.requests for r in runs)), statistics.median(cpus) if cpus else None,
    )


class Stack:
    """Child processes started by the benchmark, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cpu: str, args: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["taskset", "-c", cpu, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        wait_port(port)
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
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--serve-proxy", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        return serve_upstream(args.serve_upstream, args.delay)
    if args.serve_proxy:
        port, legacy, cand, mode, log = args.serve_proxy
        return serve_proxy(int(port), int(legacy), int(cand), mode, log)
    if args.quick:
        args.repeats, args.duration = 1, 3

    if not shutil.which("wrk"):
        sys.exit("wrk is missing: sudo apt-get install -y nginx wrk")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        print("nginx is missing (sudo apt-get install -y nginx): nginx rows are skipped")

    stack = Stack()
    tmp = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    results: dict[str, Run] = {}
    rss: dict[str, float] = {}

    def measure(label: str, port: int, pids: list[int] | None, conns: int) -> None:
        runs = [wrk(port, conns, args.duration, pids) for _ in range(args.repeats)]
        results[label] = m = median_run(runs)
        cpu = f"{m.cpu_us:7.1f} us/req" if m.cpu_us is not None else ""
        print(f"  {label:<26} {m.rps:9.0f} req/s   p50 {m.p50_ms:7.3f} ms   {cpu}", flush=True)

    try:
        legacy_port, cand_port = free_port(), free_port()
        stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(legacy_port)], legacy_port)
        stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(cand_port)], cand_port)
        print(f"upstream body {len(BODY)} bytes; {args.repeats} x {args.duration:.0f} s per row; "
              f"proxy on CPU {PROXY_CPU}, upstreams + wrk on CPU {LOAD_CPU}")

        measure("direct c=1", legacy_port, None, 1)
        measure("direct c=32", legacy_port, None, 32)

        def run_nginx(label: str, mirror: bool, candidate: int) -> None:
            d = tmp / label
            d.mkdir()
            port = free_port()
            conf = NGINX_CONF.format(dir=d, legacy=legacy_port, candidate=candidate, port=port,
                                     mirror="mirror /mirror;" if mirror else "")
            (d / "nginx.conf").write_text(conf)
            proc = stack.start(PROXY_CPU, [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                               port)
            pids = pids_of(proc.pid)
            if mirror:
                measure(f"{label} c=32", port, pids, 32)
            else:
                measure(f"{label} c=1", port, pids, 1)
                measure(f"{label} c=32", port, pids, 32)
            stack.stop(proc)

        def run_proxy(label: str, mode: str, candidate: int, latency: bool) -> None:
            port = free_port()
            proc = stack.start(PROXY_CPU, [PY, __file__, "--serve-proxy", str(port), str(legacy_port),
                                           str(candidate), mode, str(tmp / f"{label}.log")], port)
            pids = pids_of(proc.pid)
            if latency:
                measure(f"{label} c=1", port, pids, 1)
            measure(f"{label} c=32", port, pids, 32)
            rss[label] = peak_rss_mb(pids)
            stack.stop(proc)

        if nginx:
            run_nginx("nginx", False, cand_port)
            run_nginx("nginx+mirror", True, cand_port)
        run_proxy("strangler legacy", "legacy", cand_port, True)
        run_proxy("strangler shadow", "shadow", cand_port, False)
        run_proxy("strangler shadow dead", "shadow", free_port(), False)
        slow_port = free_port()
        slow = stack.start(LOAD_CPU, [PY, __file__, "--serve-upstream", str(slow_port), "--delay", "10"], slow_port)
        run_proxy("strangler shadow slow", "shadow", slow_port, False)
        stack.stop(slow)
    finally:
        stack.stop_all()

    print()
    report(results, rss, bool(nginx))


def report(r: dict[str, Run], rss: dict[str, float], have_nginx: bool) -> None:
    direct1 = r["direct c=1"].p50_ms
    s = "strangler legacy"
    print("| figure | strangler | nginx | ratio | target |")
    print("|---|---|---|---|---|")
    if have_nginx:
        n = "nginx"
        nc, sc = r[f"{n} c=32"].cpu_us or 0, r[f"{s} c=32"].cpu_us or 0
        print(f"| CPU/request, legacy pass-through (c=32) | {sc:.0f} us | {nc:.0f} us | {sc / nc:.2f}x | <= 2.5x |")
        nc1, sc1 = r[f"{n} c=1"].cpu_us or 0, r[f"{s} c=1"].cpu_us or 0
        print(f"| CPU/request, legacy pass-through (c=1) | {sc1:.0f} us | {nc1:.0f} us | {sc1 / nc1:.2f}x"
              " | <= 2.5x (ref nginx ~58 us) |")
        st, nt = r[f"{s} c=32"].rps, r[f"{n} c=32"].rps
        print(f"| throughput c=32 | {st:.0f}/s | {nt:.0f}/s | {st / nt:.2f}x | >= 0.8x |")
        sa, na = r[f"{s} c=1"].p50_ms - direct1, r[f"{n} c=1"].p50_ms - direct1
        print(f"| added p50 c=1 | {sa * 1000:.0f} us | {na * 1000:.0f} us | {sa / na if na > 0 else float('nan'):.2f}x"
              " | <= 1.8x |")
        sm, nm = r["strangler shadow c=32"].rps, r["nginx+mirror c=32"].rps
        print(f"| shadow (mirror all) throughput c=32 | {sm:.0f}/s | {nm:.0f}/s (mirror) | {sm / nm:.2f}x | >= 1.3x |")
        print(f"| nginx throughput / direct c=32 | | {nt / r['direct c=32'].rps:.2f}x | | ref ~0.57x |")
    else:
        print(f"| CPU/request legacy c=32 | {r[f'{s} c=32'].cpu_us:.0f} us | - | - | <= 145 us |")
    for label in ("strangler shadow dead", "strangler shadow slow"):
        print(f"| {label} c=32 | {r[f'{label} c=32'].rps:.0f}/s, peak RSS {rss[label]:.0f} MB | | | flat |")
    print(f"| peak RSS legacy / shadow | {rss[s]:.0f} MB / {rss['strangler shadow']:.0f} MB | | | |")


if __name__ == "__main__":
    main()
