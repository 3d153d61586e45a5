"""One cell's stack SIGKILLed under steady load: the keys of the other cells see not
one failed request, and the dead cell's keys get a prompt 502/503, never a hang.

Each cell is a real process listening on two ports -- its monolith (``legacy``)
and its ratings service (the route's target) -- so killing it takes the cell's
whole stack down at once, pooled keep-alive connections included."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import pytest

from strangler_proxy.config import load_config_text
from strangler_proxy.dataplane.handler import DEFAULT_ROUTE
from tests.dataplane.conftest import start_test_proxy, stop_test_proxy
from tests.dataplane.endpoint_support import closed_port

# One cell's stack: answers every path on both ports with who it is (X-Who: legacy-c1, ratings-c1).
SERVER = r"""
import sys
from aiohttp import web

cell, legacy, ratings = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def app(side):
    async def handle(request):
        return web.json_response({"cell": cell, "side": side}, headers={"X-Who": f"{side}-{cell}"})
    a = web.Application()
    a.router.add_route("*", "/{tail:.*}", handle)
    return a

async def main():
    for side, port in (("legacy", legacy), ("ratings", ratings)):
        runner = web.AppRunner(app(side), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""

CELLS = ("c1", "c2", "c3")
DEAD = "c2"
WORKERS = 8
PAUSE_S = 0.02  # per worker between requests: a few hundred requests a second in all
KILL_AT_S, STOP_AT_S = 0.8, 2.4
CONNECT_TIMEOUT_S = 0.5
CLIENT_TIMEOUT_S = 5.0  # a request still unanswered by then is a hang
PROMPT_S = 1.5  # a dead cell's request is answered within this (the connect timeout, and then some)
PATHS = ("/api/titles/tt1/ratings", "/api/people/p1")  # the route (ratings service), unrouted (monolith)


@dataclass
class CellStack:
    """A cell's stack in a process of its own: its monolith and its ratings service."""

    name: str
    legacy: int
    ratings: int
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, self.name, str(self.legacy), str(self.ratings),
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line.strip() == b"READY", line

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@dataclass(frozen=True)
class Answer:
    cell: str
    path: str
    started_s: float  # since the load began
    took_s: float
    status: int  # 0: no answer (client error or timeout)
    who: str | None


def config_text(stacks: list[CellStack]) -> str:
    listed = "".join(
        f'    - {{name: {s.name}, upstreams: {{legacy: "http://127.0.0.1:{s.legacy}", '
        f'ratings: "http://127.0.0.1:{s.ratings}"}}}}\n' for s in stacks)
    return f"""
upstreams:
  legacy: {{timeout_s: 2, connect_timeout_s: {CONNECT_TIMEOUT_S}}}
  ratings: {{timeout_s: 2, connect_timeout_s: {CONNECT_TIMEOUT_S}}}
routes: [{{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: extracted}}]
cells:
  partition_key: header:X-Tenant
  cells:
{listed}"""


@pytest.mark.slow
async def test_killing_one_cell_under_load_fails_only_its_keys() -> None:
    stacks = [CellStack(name, closed_port(), closed_port()) for name in CELLS]
    await asyncio.gather(*(s.start() for s in stacks))
    proxy = await start_test_proxy(load_config_text(config_text(stacks)))
    try:
        cells = proxy.runtime.snapshot.cells
        assert cells is not None
        tenants = [(t, cells.cell_of(t)) for t in (f"tenant-{i}" for i in range(60))]
        assert set(cell for _, cell in tenants) == set(CELLS)
        answers: list[Answer] = []
        start = time.monotonic()

        async def worker(session: aiohttp.ClientSession, w: int) -> None:
            i = w
            while time.monotonic() - start < STOP_AT_S:
                tenant, cell = tenants[i % len(tenants)]
                path = PATHS[(i // len(tenants)) % len(PATHS)]
                sent = time.monotonic()
                status, who = 0, None
                try:
                    async with session.get(f"http://127.0.0.1:{proxy.port}{path}",
                                           headers={"X-Tenant": tenant}) as resp:
                        await resp.read()
                        status, who = resp.status, resp.headers.get("X-Who")
                except (aiohttp.ClientError, TimeoutError):
                    pass
                answers.append(Answer(cell, path, sent - start, time.monotonic() - sent, status, who))
                i += WORKERS
                await asyncio.sleep(PAUSE_S)

        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            load = asyncio.gather(*(worker(session, w) for w in range(WORKERS)))
            await asyncio.sleep(KILL_AT_S)
            dead = next(s for s in stacks if s.name == DEAD)
            kill_s = time.monotonic() - start
            await dead.kill()
            killed_s = time.monotonic() - start  # dead and reaped
            await load

        others = [a for a in answers if a.cell != DEAD]
        after_kill = [a for a in others if a.started_s > killed_s]
        assert len(answers) >= 300 and len(after_kill) >= 100, (len(answers), len(after_kill))
        # The other cells: not one failed request, each served by its own cell's stack.
        assert Counter(a.status for a in others) == {200: len(others)}
        assert all(a.who == f"{'ratings' if a.path == PATHS[0] else 'legacy'}-{a.cell}" for a in others)
        # The dead cell: served while alive; once dead, a prompt 502/503 for every request, no hang.
        dead_keys = [a for a in answers if a.cell == DEAD]
        before = [a for a in dead_keys if a.started_s + a.took_s < kill_s]
        gone = [a for a in dead_keys if a.started_s > killed_s]
        assert before and all(a.status == 200 for a in before)
        assert len(gone) >= 20 and {a.status for a in gone} <= {502, 503}, Counter(a.status for a in gone)
        assert max(a.took_s for a in dead_keys) < PROMPT_S
        # The proxy's own figures say the same: 5xx only in the dead cell.
        reg = proxy.runtime.registry
        for cell in CELLS:
            failed = sum(reg.get_sample_value("strangler_proxy_requests_total", {
                "route": route, "mode": mode, "upstream": f"{up}@{cell}", "status": str(status), "cell": cell}) or 0
                for route, mode, up in (("ratings", "extracted", "ratings"), (DEFAULT_ROUTE, "legacy", "legacy"))
                for status in (502, 503, 504))
            assert (failed > 0) == (cell == DEAD), (cell, failed)
    finally:
        await stop_test_proxy(proxy)
        for s in stacks:
            await s.kill()
