"""`strangler proxy --workers 2`: two processes on one port (SO_REUSEPORT), one
admin API whose /routes and /metrics count both, a flip seen by both, SIGTERM
stopping the group."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from strangler_proxy.workers import worker_count

from .conftest import ADMIN_TOKEN, config_text

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_count() -> None:
    assert worker_count("3") == 3 and worker_count("auto") == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        worker_count("0")


@pytest.mark.slow
async def test_two_workers_share_the_port_the_flips_and_one_admin_api(tmp_path: Path, upstreams) -> None:
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port))
    port, admin_port = _free_port(), _free_port()
    env = {**os.environ, "STRANGLER_DATA_DIR": str(tmp_path / "data")}
    env.pop("STRANGLER_ADMIN_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "strangler_proxy.cli.main", "proxy", "--config", str(path), "--port", str(port),
         "--admin-port", str(admin_port), "--workers", "2", "--access-log", str(tmp_path / "access.log")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            deadline = time.monotonic() + 40
            while True:  # up when worker 0's admin API sees worker 1 in its metrics
                try:
                    r = await client.get(f"http://127.0.0.1:{admin_port}/metrics", headers=AUTH)
                    if 'worker="1"' in r.text:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"the workers did not start:\n{proc.communicate(timeout=5)}")
                await asyncio.sleep(0.2)

            # Many short connections: the kernel spreads them over both workers.
            for _ in range(60):
                async with httpx.AsyncClient(timeout=3) as fresh:
                    r = await fresh.get(f"http://127.0.0.1:{port}/api/titles/tt1/ratings")
                    assert r.status_code == 200 and r.json()["value"] == 42
            routes = (await client.get(f"http://127.0.0.1:{admin_port}/routes", headers=AUTH)).json()
            ratings_route = next(r for r in routes["routes"] if r["name"] == "ratings")
            assert ratings_route["counters"]["requests"] == 60  # both workers' counters, added up

            text = (await client.get(f"http://127.0.0.1:{admin_port}/metrics", headers=AUTH)).text
            per_worker: dict[str, float] = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if s.name == "strangler_proxy_requests_total" and s.labels.get("route") == "ratings":
                        per_worker[s.labels["worker"]] = per_worker.get(s.labels["worker"], 0) + s.value
            assert sum(per_worker.values()) == 60 and min(per_worker.values()) > 0, per_worker

            # A flip through the one admin API reaches both workers (through the control database).
            r = await client.post(f"http://127.0.0.1:{admin_port}/routes/ratings/flip", headers=AUTH,
                                  json={"mode": "extracted", "reason": "workers test"})
            assert r.status_code == 200, r.text
            before = ratings.hits
            await asyncio.sleep(1.5)  # > the replicas' poll interval
            for _ in range(40):
                async with httpx.AsyncClient(timeout=3) as fresh:
                    assert (await fresh.get(f"http://127.0.0.1:{port}/api/titles/tt1/ratings")).status_code == 200
            assert ratings.hits - before == 40  # every request served by the target, whichever worker took it
    finally:
        out = err = ""
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"listening on http://127.0.0.1:{port} (2 workers)" in out
