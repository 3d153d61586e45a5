"""An upstream with several endpoints: ``strangler up`` serves its app once per
endpoint, the further copies in processes of their own, all on one database
(migrated and seeded once, by the first copy)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from strangler_proxy.config import load_config
from strangler_proxy.stack.components import StackOptions, stack_components
from strangler_proxy.stack.registry import load_stack
from tests.stack.test_registry import _free_port

TWO_ZONES = """
upstreams:
  legacy:
    endpoints:
      - {{url: "http://127.0.0.1:{a}", zone: zone-a}}
      - {{url: "http://127.0.0.1:{b}", zone: zone-b}}
stack:
  apps:
    - {{name: monolith, app: "legacy_monolith.stack:APP", upstream: legacy}}
"""


def stable(answer: dict[str, object]) -> dict[str, object]:
    """The monolith's answer without its volatile fields."""
    return {k: v for k, v in answer.items() if k not in ("generated_at", "request_id")}


async def test_a_two_endpoint_upstream_starts_two_copies_on_one_database(tmp_path: Path, data_dir: str) -> None:
    a, b = _free_port(), _free_port()
    path = tmp_path / "strangler.yaml"
    path.write_text(TWO_ZONES.format(a=a, b=b))
    config = load_config(path)
    stack = load_stack(config)
    assert (stack.legacy().ports, stack.legacy().zones) == ((a, b), ("zone-a", "zone-b"))
    components = stack_components(stack, config, StackOptions(size=3, seed=7, with_services=False,
                                                              config_path=str(path)))
    assert [c.name for c in components] == ["monolith (zone-a)", "monolith (zone-b)"]

    started = []
    try:
        for component in components:
            started.append((component, await component.start()))
        (_, first), (_, second) = started
        assert first == f"http://127.0.0.1:{a}"
        url, _, pid = second.partition("  (pid ")
        assert url == f"http://127.0.0.1:{b}" and int(pid.rstrip(")")) != os.getpid()  # a process of its own

        async with aiohttp.ClientSession() as http:
            listed = []
            for base in (f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"):
                async with http.get(base + "/api/titles") as resp:
                    assert resp.status == 200
                    listed.append([t["id"] for t in (await resp.json())["items"]])
            assert listed[0] == listed[1] and len(listed[0]) == 3  # seeded once, seen by both
            title = listed[0][0]
            # a write through zone-b is read back through zone-a: one database
            async with http.post(f"http://127.0.0.1:{b}/api/titles/{title}/ratings",
                                 json={"user_id": "u-copies", "value": 9}) as resp:
                assert resp.status in (200, 201)
                written = stable(await resp.json())
            async with http.get(f"http://127.0.0.1:{a}/api/titles/{title}/ratings") as resp:
                assert stable(await resp.json()) == written
    finally:
        for component, _ in reversed(started):
            await component.stop()
    async with aiohttp.ClientSession() as http:
        for port in (a, b):
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{port}/healthz"):
                    pass
