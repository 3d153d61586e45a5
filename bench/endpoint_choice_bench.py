"""What choosing an endpoint costs, in-process: ``UpstreamPool.send`` with a stub
endpoint client (no sockets), so only the pool's own work is timed -- one
``url:`` vs three ``endpoints:`` (two priorities), CPU per send by
``time.process_time``, three rounds. The whole-proxy comparison is
``bench/proxy_bench.py --only endpoints``; on a shared box its noise is larger
than the difference this measures (docs/proxy.md "Choosing an endpoint").

    .venv/bin/python bench/endpoint_choice_bench.py [--sends N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strangler_proxy.config import load_config_text  # noqa: E402
from strangler_proxy.dataplane.pool import Upstreams  # noqa: E402

CONFIG = """
upstreams:
  legacy: {url: "http://127.0.0.1:9"}
  three:
    endpoints:
      - {url: "http://127.0.0.1:10", zone: a}
      - {url: "http://127.0.0.1:11", zone: b}
      - {url: "http://127.0.0.1:12", zone: c, priority: 1}
"""


class _Answer:
    status = 200
    connection = None  # the whole answer is in: nothing left in flight


class _StubClient:
    """Answers at once; stands in for an endpoint's EndpointClient."""

    async def send(self, *args: Any) -> _Answer:
        return _Answer()

    async def close(self) -> None:
        pass


async def _per_send_us(send: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await send("GET", "/x", "", [], None)
    return (time.process_time() - start) / n * 1e6


async def main(sends: int) -> None:
    config = load_config_text(CONFIG)
    upstreams = Upstreams()
    pools = {}
    for name in ("legacy", "three"):
        pool = upstreams.get(name, config.upstreams[name])
        for client in pool.clients:
            await client.close()
        pool.clients = tuple(_StubClient() for _ in pool.clients)  # type: ignore[assignment]
        pools[name] = pool
    stub = await _per_send_us(_StubClient().send, sends)
    print(f"stub client alone: {stub:.2f} us a send")
    for round_ in range(3):
        one = await _per_send_us(pools["legacy"].send, sends)
        three = await _per_send_us(pools["three"].send, sends)
        print(f"round {round_ + 1}: one endpoint {one:.2f} us, three endpoints {three:.2f} us, "
              f"choosing among three {three - one:+.2f} us a request")
    await upstreams.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sends", type=int, default=200_000)
    asyncio.run(main(ap.parse_args().sends))
