"""One of two endpoints SIGKILLed under steady load: no read fails, no write is
sent twice, the dead endpoint is ejected within the thresholds and serves again
once it is back. The endpoints are real processes, counted by what they print."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.dataplane.endpoint_support import (
    HEALTH_PATH,
    MakePoolProxy,
    closed_port,
    endpoint,
    pool_proxy,  # noqa: F401 -- the fixture
    until,
)

# One endpoint: answers its name and prints every request it received before answering.
SERVER = r"""
import sys
from aiohttp import web

name, port = sys.argv[1], int(sys.argv[2])

async def health(request):
    return web.Response(text="ok")

async def handle(request):
    body = await request.read()
    sys.stdout.write(f"{request.method} {body.decode() or '-'}\n")
    sys.stdout.flush()
    return web.Response(text=name)

app = web.Application()
app.router.add_get("/healthz", health)
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda *_: print("READY", flush=True))
"""

WORKERS = 4
PAUSE_S = 0.025  # per worker between requests: about 150 requests a second in all
KILL_AT_S, RESTART_AT_S, STOP_AT_S = 1.0, 2.5, 5.0
OUTLIER = {"consecutive_failures": 3, "base_ejection_s": 0.5, "max_ejection_s": 1.0}
CHECKS = {"path": HEALTH_PATH, "interval_s": 0.2, "timeout_s": 0.5, "unhealthy_after": 2, "healthy_after": 1}


@dataclass
class Process:
    """An endpoint process and every line it printed (kept after it is killed)."""

    name: str
    port: int
    lines: list[str] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, self.name, str(self.port), stdout=asyncio.subprocess.PIPE)
        ready = asyncio.get_running_loop().create_future()
        self.reader = asyncio.get_running_loop().create_task(self._read(ready))
        await asyncio.wait_for(ready, 20)

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line == "READY" and not ready.done():
                ready.set_result(None)
            else:
                self.lines.append(line)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self.reader is not None:
            await self.reader  # everything it printed before it died

    def posts(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith("POST ")]


@pytest.mark.slow
async def test_an_endpoint_killed_under_load(pool_proxy: MakePoolProxy) -> None:
    a, b = Process("a", closed_port()), Process("b", closed_port())
    await asyncio.gather(a.start(), b.start())
    try:
        proxy = await pool_proxy({"legacy": {
            "endpoints": [endpoint(a.url, "zone-a"), endpoint(b.url, "zone-b")],
            "outlier": OUTLIER, "health": CHECKS, "connect_timeout_s": 1, "timeout_s": 5}})
        answers: list[tuple[str, int, str]] = []  # (method, status, body)
        posted: list[str] = []
        start = time.monotonic()

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() - start < STOP_AT_S:
                if i % 2:
                    key = f"w{w}-{i}"
                    posted.append(key)
                    status, text = await proxy.post(f"/orders/{key}", key.encode())
                    answers.append(("POST", status, text))
                else:
                    status, text = await proxy.get(f"/titles/tt{w}{i}")
                    answers.append(("GET", status, text))
                i += 1
                await asyncio.sleep(PAUSE_S)

        load = asyncio.gather(*(worker(w) for w in range(WORKERS)))
        await asyncio.sleep(KILL_AT_S)
        await a.kill()
        killed_at = time.monotonic()
        await until(lambda: not proxy.status(a.url).healthy, timeout_s=2)
        out_after_s = time.monotonic() - killed_at
        failed_before_out = proxy.status(a.url).failures
        await asyncio.sleep(RESTART_AT_S - (time.monotonic() - start))
        lines_before_restart = len(a.lines)
        await a.start()
        await load

        gets = [status for method, status, _ in answers if method == "GET"]
        assert len(answers) >= 300 and gets.count(200) == len(gets)  # not one read failed
        # Writes: each one reached at most one endpoint, at most once -- including the ones
        # in flight when the process died (those may be answered 502: they may have been received).
        received = Counter(a.posts() + b.posts())
        assert received and max(received.values()) == 1 and set(received) <= set(posted)
        ok_posts = [text for method, status, text in answers if method == "POST" and status == 200]
        failed_posts = [status for method, status, _ in answers if method == "POST" and status != 200]
        assert len(ok_posts) + len(failed_posts) == len(posted) and len(failed_posts) <= WORKERS
        assert set(failed_posts) <= {502}
        # Out of the pool fast: within consecutive_failures (or the checks' unhealthy_after)
        # failed requests, give or take what was in flight when it died.
        assert out_after_s < 1.0 and failed_before_out <= OUTLIER["consecutive_failures"] + WORKERS
        # Back: the restarted process serves again before the load ends.
        assert len(a.lines) > lines_before_restart
        assert proxy.status(a.url).healthy
        assert proxy.metric("strangler_upstream_retries_total", upstream="legacy") >= 1
    finally:
        for p in (a, b):
            if p.proc is not None and p.proc.returncode is None:
                await p.kill()
