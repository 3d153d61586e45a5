"""Secret query values never reach a stored sample, nor a report of older samples."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console
from sqlalchemy import text

from strangler_proxy.config import StoreSettings, load_config_text
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.redaction import redactions_for
from strangler_proxy.diff.result import Verdict
from strangler_proxy.report import build_report, render_html, render_json, render_text
from strangler_proxy.store import ResultWriter
from tests.store.factory import migrated_sqlite, result

CONFIG = """
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
routes:
  - name: ratings
    path: /api/titles/{id}/ratings
    target: ratings
    mode: shadow
    compare: {redact_query: [session]}
"""
TARGET = "/api/titles/tt1/ratings?lang=en&token=tok-SECRET-1&session=sess-SECRET-2"
REDACTED_TARGET = "/api/titles/tt1/ratings?lang=en&token=REDACTED&session=REDACTED"


async def _targets(url: str) -> list[str]:
    eng = make_engine(url)
    try:
        async with eng.connect() as conn:
            return list((await conn.execute(text("select target from samples order by id"))).scalars())
    finally:
        await eng.dispose()


async def test_stored_samples_keep_the_target_without_its_secrets(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path)
    config = load_config_text(CONFIG)
    eng = make_engine(url)
    # A body limit that would cut inside the secret: redaction comes first.
    writer = ResultWriter(eng, StoreSettings(body_limit=len(TARGET) - 3), redaction=redactions_for(config))
    writer.observe(dataclasses.replace(result("ratings", Verdict.MISMATCH, diffs=(("$.n", 1, 2),)), target=TARGET))
    await writer.flush()
    await eng.dispose()
    assert await _targets(url) == [REDACTED_TARGET]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("control.sqlite3*"))
    assert b"SECRET" not in raw


async def test_a_report_redacts_samples_stored_before_the_rule(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path)
    eng = make_engine(url)
    # Stored by a proxy that knew no rule for "session" (and only the default names).
    writer = ResultWriter(eng, StoreSettings(), redaction=redactions_for(None))
    writer.observe(dataclasses.replace(result("ratings", Verdict.MISMATCH, diffs=(("$.n", 1, 2),)), target=TARGET))
    await writer.flush()
    assert await _targets(url) == ["/api/titles/tt1/ratings?lang=en&token=REDACTED&session=sess-SECRET-2"]

    report = await build_report(eng, load_config_text(CONFIG), database="test")
    await eng.dispose()
    [sample] = report.key("ratings").samples  # type: ignore[union-attr]
    assert sample.target == REDACTED_TARGET
    out = io.StringIO()
    render_text(report, Console(file=out, width=200))
    for rendered in (out.getvalue(), render_json(report), render_html(report)):
        assert "SECRET" not in rendered
    assert "token=REDACTED&amp;session=REDACTED" in render_html(report)
