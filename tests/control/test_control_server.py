"""Whole proxies (ProxyServer) with real upstreams: restarts, reloads, flips under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def stack(tmp_path: Path, upstreams, sqlite_url):
    legacy = await upstreams("legacy")
    ratings = await upstreams("ratings")
    path = tmp_path / "strangler.yaml"

    def write(**kwargs: object) -> None:
        path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port, **kwargs))  # type: ignore[arg-type]

    write()

    def server(**kwargs: object) -> ProxyServer:
        return ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, **kwargs)  # type: ignore[arg-type]

    return {"legacy": legacy, "ratings": ratings, "path": path, "write": write, "server": server}


async def test_proxy_serves_and_a_flip_survives_a_restart(stack) -> None:
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{s.url}/api/titles/tt1/ratings")).json() == {
            "path": "/api/titles/tt1/ratings", "value": 42}
        r = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH,
                              json={"mode": "extracted", "reason": "cut over"})
        assert r.status_code == 200, r.text
        before = stack["ratings"].hits
        await client.get(f"{s.url}/api/titles/tt1/ratings")
        assert stack["ratings"].hits == before + 1  # the target serves now
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        assert s.runtime.table.get("ratings").mode is Mode.EXTRACTED
        routes = (await client.get(f"{s.admin_url}/routes", headers=AUTH)).json()["routes"]
        assert {r["name"]: r["source"] for r in routes}["ratings"] == "flip"


BAD_FILES = [
    ("routes:\n  - {name: x\n", "not valid YAML"),
    ("upstreams: {legacy: {url: 'http://127.0.0.1:1'}}\nroutes:\n  - {name: r, path: /a, mode: shaddow, target: legacy}\n",
     "strangler.yaml:3: routes[0].mode"),
    ("upstreams: {legacy: {url: 'http://127.0.0.1:1'}}\nroutes:\n  - {name: r, path: /a, mode: shadow, target: nope}\n",
     "routes[0].target: 'nope' is not an upstream"),
    ("upstreams: {legacy: {url: 'ftp://x'}}\n", "upstreams.legacy.url: must be an http:// or https:// URL"),
    ("upstreams: {legacy: {url: 'http://127.0.0.1:1'}}\nproxy: {listne: {}}\n", "proxy.listne: unknown field"),
    ("", "the file is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
async def test_a_bad_file_on_reload_is_refused_whole_and_the_old_config_keeps_serving(stack, text, message) -> None:
    async with stack["server"](watch=False) as s, httpx.AsyncClient(timeout=5) as client:
        config = s.runtime.config
        stack["path"].write_text(text)
        result = await s.reloader.reload_now()
        assert not result["ok"]
        assert any(message in e for e in result["errors"]), result["errors"]
        assert s.runtime.config is config
        assert message in s.reloader.last_error
        r = await client.get(f"{s.url}/api/titles/tt1/ratings")
        assert r.status_code == 200 and s.runtime.table.get("ratings").mode is Mode.SHADOW
        # The admin API reports the refusal too.
        r = await client.post(f"{s.admin_url}/reload", headers=AUTH)
        assert r.status_code == 400 and any(message in e for e in r.json()["errors"])


async def test_saving_the_file_reloads_it_and_a_bad_save_is_ignored(stack) -> None:
    async with stack["server"](watch_interval_s=0.05) as s:
        stack["path"].write_text("upstreams: [broken\n")
        await _until(lambda: s.reloader.last_error is not None)
        assert s.runtime.table.get("ratings").mode is Mode.SHADOW
        stack["write"](ratings_mode="canary", ratings_percent=30)
        await _until(lambda: s.runtime.table.get("ratings").mode is Mode.CANARY)
        assert s.runtime.table.get("ratings").percent == 30.0 and s.reloader.last_error is None


async def test_sighup_reloads_the_file(stack) -> None:
    async with stack["server"](watch=False, sighup=True) as s:
        stack["write"](ratings_mode="legacy")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: s.runtime.table.get("ratings").mode is Mode.LEGACY)


async def test_file_vs_flip_precedence_through_the_running_proxy(stack) -> None:
    async with stack["server"](watch=False) as s, httpx.AsyncClient(timeout=5) as client:
        await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "canary", "percent": 10})
        stack["write"](extra="")  # same values: the flip stays
        assert (await s.reloader.reload_now())["ok"]
        assert s.runtime.table.get("ratings").mode is Mode.CANARY
        stack["write"](ratings_mode="extracted")  # the file's own value changed: it wins
        result = await s.reloader.reload_now()
        assert [c["name"] for c in result["changes"]] == ["ratings"]
        assert s.runtime.table.get("ratings").mode is Mode.EXTRACTED
        [entry, *_] = (await client.get(f"{s.admin_url}/audit", headers=AUTH)).json()["entries"]
        assert (entry["who"], entry["from"]["mode"], entry["to"]["mode"]) == ("file", "canary", "extracted")


FLIPS = 50
CLIENTS = 4


async def test_flips_under_steady_load_fail_no_request(stack) -> None:
    """4 clients send requests for the whole duration of 50 flips; every one succeeds."""
    cycle = [("canary", 50), ("extracted", None), ("legacy", None), ("shadow", None), ("canary", 5)]
    async with stack["server"](watch=False) as s, httpx.AsyncClient(timeout=5) as client:
        done = asyncio.Event()
        failures: list[str] = []
        counts = [0] * CLIENTS

        async def load(i: int) -> None:
            n = 0
            while not done.is_set():
                n += 1
                try:
                    r = await client.get(f"{s.url}/api/titles/tt{i}{n % 7}/ratings")
                    if r.status_code != 200 or r.json()["value"] != 42:
                        failures.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                counts[i] += 1

        workers = [asyncio.create_task(load(i)) for i in range(CLIENTS)]
        started = time.monotonic()
        for k in range(FLIPS):
            mode, percent = cycle[k % len(cycle)]
            body = {"mode": mode, **({"percent": percent} if percent is not None else {})}
            r = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH, json=body)
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.01)
        done.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
        elapsed = time.monotonic() - started
        assert failures == []
        assert sum(counts) >= FLIPS, counts  # the load really overlapped the flips
        assert len(await s.flips.audit(limit=100)) == FLIPS
        print(f"{FLIPS} flips in {elapsed:.2f}s under {sum(counts)} requests from {CLIENTS} clients, 0 failed")


async def _until(predicate, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
