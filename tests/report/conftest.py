"""A results store with a ready route, a mismatching one, a GraphQL field with
too few samples, and secrets in the samples; plus a strangler.yaml for it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from strangler_proxy.config import StoreSettings, load_config
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.redaction import redactions_for
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import ResultWriter
from tests.store.factory import BASE_T, migrated_sqlite, result

SECRET_TOKEN = "tok-SECRET-9f1"
SECRET_HEADER = "bearer-SECRET-77"

YAML = """
upstreams:
  legacy: {{url: "http://127.0.0.1:8001"}}
  ratings: {{url: "http://127.0.0.1:8101"}}
  credits: {{url: "http://127.0.0.1:8102"}}
store: {{url: "{url}"}}
compare: {{redact_paths: ["$..token"]}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: credits, path: "/api/titles/{{id}}/cast", target: credits, mode: shadow}}
  - {{name: images, path: "/api/titles/{{id}}/images", target: credits, mode: shadow,
     readiness: {{min_samples: 5}}}}
graphql:
  backends: {{ratings: {{upstream: ratings}}}}
  fields:
    Title.rating: {{target: ratings, mode: shadow}}
"""


@dataclass(frozen=True)
class Store:
    url: str
    config_path: Path


async def _populate(url: str, config_path: Path) -> None:
    config = load_config(config_path)
    eng = make_engine(url)
    writer = ResultWriter(eng, StoreSettings(), redaction=redactions_for(config))
    for i in range(500):  # ratings: clean, over 9 minutes
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i, legacy_s=0.010 + (i % 7) / 1000, candidate_s=0.011))
    for i in range(300):  # credits: 10 % mismatches on one path
        at = BASE_T + i * 2
        if i % 10 == 0:
            legacy = b'{"cast": [{"name": "Ann", "token": "%s"}], "n": 1}' % SECRET_TOKEN.encode()
            cand = b'{"cast": [{"name": "Anne", "token": "%s"}], "n": 1}' % SECRET_TOKEN.encode()
            writer.observe(
                result(
                    "credits",
                    Verdict.MISMATCH,
                    at,
                    diffs=(("$.cast[0].name", "Ann", "Anne"),),
                    legacy_body=legacy,
                    candidate_body=cand,
                    extra={"request_headers": [["Authorization", SECRET_HEADER]]},
                )
            )
        else:
            writer.observe(result("credits", Verdict.MATCH, at, noise=("$.generated_at",)))
    for i in range(20):
        writer.observe(result("graphql:Title.rating", Verdict.MATCH, BASE_T + i))
    await writer.flush()
    await eng.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = asyncio.run(migrated_sqlite(tmp_path))
    config_path = tmp_path / "strangler.yaml"
    config_path.write_text(YAML.format(url=url))
    asyncio.run(_populate(url, config_path))
    return Store(url, config_path)


@pytest.fixture
def empty_store(tmp_path: Path) -> Store:
    url = asyncio.run(migrated_sqlite(tmp_path, "empty"))
    return Store(url, tmp_path / "missing.yaml")
