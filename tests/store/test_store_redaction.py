"""Secrets never reach the store in clear, even when a result carries them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from strangler_proxy.config import StoreSettings, load_config_text
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.redaction import redactions_for
from strangler_proxy.diff.result import DiffKind, Verdict
from strangler_proxy.store import ResultWriter
from tests.store.factory import migrated_sqlite, result

CONFIG = """
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
compare:
  redact_headers: [X-Api-Key]
routes:
  - name: ratings
    path: /api/titles/{id}/ratings
    target: ratings
    mode: shadow
    compare: {redact_paths: ["$.owner.api_token"]}
"""
SECRETS = ("bearer-SECRET-1", "cookie-SECRET-2", "apikey-SECRET-3", "json-SECRET-4", "setcookie-SECRET-5")


def leaky_results():  # type: ignore[no-untyped-def]
    body_l = b'{"owner": {"api_token": "json-SECRET-4", "name": "a"}, "rating": 7}'
    body_c = b'{"owner": {"api_token": "json-SECRET-4", "name": "b"}, "rating": 8}'
    extra = {
        "request_headers": [["Authorization", "bearer-SECRET-1"], ["Cookie", "cookie-SECRET-2"]],
        "response_headers": {"Set-Cookie": "setcookie-SECRET-5", "X-API-KEY": "apikey-SECRET-3"},
    }
    yield result(
        "ratings",
        Verdict.MISMATCH,
        diffs=(("$.owner", {"api_token": "json-SECRET-4", "name": "a"}, {"api_token": "json-SECRET-4", "name": "b"}),
               ("$.owner.api_token", "json-SECRET-4", "other"), ("$.rating", 7, 8)),
        legacy_body=body_l,
        candidate_body=body_c,
        extra=extra,
    )
    yield result(
        "ratings", Verdict.MISMATCH, diffs=(("x-api-key", "apikey-SECRET-3", "k"),), kind=DiffKind.HEADER, extra=extra
    )


async def dump_database(url: str) -> str:
    eng = make_engine(url)
    try:
        async with eng.connect() as conn:
            tables = (await conn.execute(text("select name from sqlite_master where type='table'"))).scalars().all()
            out = []
            for t in tables:
                for row in await conn.execute(text(f'select * from "{t}"')):
                    out.append(repr(tuple(row)))
        return "\n".join(out)
    finally:
        await eng.dispose()


async def test_no_secret_reaches_the_store(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path)
    config = load_config_text(CONFIG)
    eng = make_engine(url)
    writer = ResultWriter(eng, StoreSettings(), redaction=redactions_for(config))
    for r in leaky_results():
        writer.observe(r)
    await writer.flush()
    await eng.dispose()
    dump = await dump_database(url)
    assert "[REDACTED]" in dump and '"rating":7' in dump.replace(" ", "")  # the rest is kept
    for secret in SECRETS:
        assert secret not in dump
    raw = (tmp_path / "control.sqlite3").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("control.sqlite3-*"))
    for secret in SECRETS:
        assert secret.encode() not in raw
